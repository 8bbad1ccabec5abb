"""The judge's prompt and how its answer becomes a label.

The prompt is a text file a user can replace (`relkit judge --prompt FILE`), with `${...}`
placeholders: `rubric` (the workspace scale, one level a line), `guidelines` (the text of
`--guidelines FILE`, or nothing), `examples` (few-shot train judgments, or nothing), `k`, and for
each pair `query` and `item` (the item text from `relkit.text`, the template the teacher uses).
The prompt's hash covers everything in it but the pair, so a label is cached and reused only
under the same prompt. A second template, `prompt-reworded.txt`, says the same (the rubric, the
guidelines, the examples, the pair) in other words: `relkit judge --probe` asks a judge under both
to see how far its levels hang on the wording.

The answer is a level number. Where the server gives the log-probabilities of the answer token,
the label is the distribution over the level tokens; otherwise the level the text names, one-hot;
an answer that names no level is unparsed, never guessed.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np

from relkit.errors import RelkitError
from relkit.scale import LabelScale
from relkit.text import ItemTextTemplate

PLACEHOLDERS = ("rubric", "guidelines", "examples", "k", "query", "item")
MAX_LEVELS = 9      # the answer is one digit token: 1..9
TEMPLATES = {"default": "prompt.txt", "reworded": "prompt-reworded.txt"}   # relkit's own, package data


def default_template_text(which: str = "default") -> str:
    """The text of relkit's prompt template `which` (default, or reworded: the same in other words)."""
    if which not in TEMPLATES:
        raise RelkitError(f"unknown prompt template '{which}'; one of {', '.join(TEMPLATES)}")
    return resources.files("relkit.judge").joinpath(TEMPLATES[which]).read_text()


def check_template(text: str, origin: str) -> None:
    """A template names only the known placeholders, and names the query and the item."""
    try:
        names = {m.group("named") or m.group("braced") for m in Template.pattern.finditer(text)
                 if m.group("named") or m.group("braced")}
        if any(m.group("invalid") is not None for m in Template.pattern.finditer(text)):
            raise ValueError("a '$' that starts no placeholder (write $$ for a dollar sign)")
    except ValueError as e:
        raise RelkitError(f"{origin}: not a usable prompt template ({e})") from None
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        raise RelkitError(f"{origin}: unknown placeholder(s) {', '.join('${' + n + '}' for n in unknown)}; "
                          f"a template may use {', '.join('${' + n + '}' for n in PLACEHOLDERS)}")
    missing = [n for n in ("query", "item") if n not in names]
    if missing:
        raise RelkitError(f"{origin}: the template must contain {' and '.join('${' + n + '}' for n in missing)}")


@dataclass(frozen=True)
class Shot:
    query: str
    item: str
    level: int


@dataclass(frozen=True)
class PromptBuilder:
    """Renders the prompt of each pair. `frame` is the template with everything but the pair filled in.

    >>> b = PromptBuilder.build(LabelScale.default(2), ItemTextTemplate.parse("title"))
    >>> "1 = not relevant" in b.render("red chair", {"title": "Red oak chair"})
    True
    """

    frame: str
    item_template: ItemTextTemplate
    # what filled the frame, kept to say the same under another template (`with_template`)
    scale: LabelScale | None = field(default=None, compare=False, repr=False)
    guidelines: str = field(default="", compare=False, repr=False)
    shots: tuple[Shot, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def build(cls, scale: LabelScale, item_template: ItemTextTemplate, template: str | None = None,
              guidelines: str = "", shots: tuple[Shot, ...] = (), origin: str = "the prompt template") -> "PromptBuilder":
        if scale.k > MAX_LEVELS:
            raise RelkitError(f"a judge answers with one digit, so the scale may have at most {MAX_LEVELS} levels; "
                              f"this one has {scale.k}")
        text = default_template_text() if template is None else template
        check_template(text, origin)
        examples = ""
        if shots:
            examples = "\nExamples:\n" + "\n".join(
                f"Query: {s.query}\nItem:\n{s.item}\nAnswer: {s.level}\n" for s in shots)
        guide = f"\nGuidelines:\n{guidelines.strip()}\n" if guidelines.strip() else ""
        frame = Template(text).safe_substitute(rubric=scale.describe().replace(", ", "\n"), guidelines=guide,
                                               examples=examples, k=str(scale.k))
        return cls(frame=frame, item_template=item_template, scale=scale, guidelines=guidelines, shots=shots)

    def with_template(self, template: str, origin: str = "the prompt template") -> "PromptBuilder":
        """The same rubric, guidelines, examples and item text under another template.

        >>> b = PromptBuilder.build(LabelScale.default(2), ItemTextTemplate.parse("title"))
        >>> r = b.with_template(default_template_text("reworded"))
        >>> r.hash != b.hash, "1 = not relevant" in r.render("red chair", {"title": "Red oak chair"})
        (True, True)
        """
        if self.scale is None:
            raise RelkitError("this prompt was not built with PromptBuilder.build: it cannot be reworded")
        return PromptBuilder.build(self.scale, self.item_template, template, self.guidelines, self.shots, origin)

    @property
    def hash(self) -> str:
        """Of everything that shapes a prompt except the pair: the filled frame and the item text template."""
        key = self.frame + "\0" + repr(self.item_template.to_list())
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def render(self, query: str, item: dict) -> str:
        # the pair goes in last and unparsed: a '$' in an item's text stays as it is
        return Template(self.frame).safe_substitute(query=query, item=self.item_template.render(item))


def parse_answer(text: str | None, k: int, names: tuple[str, ...] = ()) -> int | None:
    """The level an answer names, or None: its one number when that is a level (two different
    numbers, a fraction or a number off the scale: None, never a guess); with no number, a level's
    name as the whole answer.

    >>> parse_answer("3", 4), parse_answer(" 2.", 4), parse_answer("Level: 4 (highly)", 4)
    (3, 2, 4)
    >>> parse_answer("relevant", 2, ("not relevant", "relevant")), parse_answer("I cannot say", 4)
    (2, None)
    >>> parse_answer("between 2 and 3", 4), parse_answer("7", 4), parse_answer("2.5", 4)
    (None, None, None)
    """
    if not text or not text.strip():
        return None
    numbers = set(re.findall(r"\d+(?:\.\d+)?", text))
    if numbers:
        if len(numbers) != 1:
            return None
        number = numbers.pop()
        return int(number) if number.isdigit() and 1 <= int(number) <= k else None
    folded = re.sub(r"[^\w\s]", "", text).strip().lower()
    for i, name in enumerate(names, start=1):
        if folded == name.lower():
            return i
    return None


def level_distribution(top: list[tuple[str, float]], k: int) -> np.ndarray | None:
    """The distribution over levels 1..k from one position's top (token, logprob) alternatives: the
    probability mass of each level's tokens (" 3" and "3" are one level), renormalised over the
    levels. None when no alternative is a level.

    >>> level_distribution([("2", math.log(0.6)), (" 3", math.log(0.3)), ("The", math.log(0.1))], 3).round(3).tolist()
    [0.0, 0.667, 0.333]
    """
    mass = np.zeros(k)
    for token, logprob in top:
        t = token.strip()
        if t.isdigit() and 1 <= int(t) <= k and logprob is not None and math.isfinite(logprob):
            mass[int(t) - 1] += math.exp(logprob)
    total = mass.sum()
    return mass / total if total > 0 else None


def one_hot(level: int, k: int) -> np.ndarray:
    out = np.zeros(k)
    out[level - 1] = 1.0
    return out


def read_text_file(path: Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RelkitError(f"{path}: cannot read the {what} ({e})") from None
