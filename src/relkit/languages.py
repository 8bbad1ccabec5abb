"""What language a text is in, as an ISO 639-1 code ('en', 'de', 'zh'), for the texts whose file
does not say.

The detector is py3langid (a Naive Bayes model over byte n-grams that ships inside its wheel, so it
runs offline), choosing among widely written languages (`DETECTED`). `benchmarks/language_detection.py`
compares it with lingua on real short queries (docs/languages.md has the figures): it was the more
accurate of the two on XQuAD-R's English, Spanish and German questions, as accurate on Chinese
product queries, and about thirty times faster.

No detector reads a query of two words reliably: 'screen door' looks Dutch. So texts are detected
together and weighed by how common each language is among them (`detect_languages`): the languages
of the texts detected with confidence, and of those already stored beside them, are a prior, and
each text gets the language most probable given both its letters and that prior. An English
catalog's short queries are then English however Dutch they look, while a Chinese or German text in
a mixed catalog keeps its language. A single text (a query searched in a catalog) is weighed the
same way by the catalog's languages (`language_among`).
"""
from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

CONFIDENT = 0.5       # a detection this probable counts toward the prior of the texts' languages
DETECT_CHARS = 300    # detection reads this much of a text (an item's title and the start of its description)
# What detection chooses among: widely written languages. Short texts are where detectors err, and
# most of their errors are languages few catalogs are in ('red chair' reads as Scottish Gaelic,
# 'Black Gadget' as Danish); a catalog in another language says so in its file.
DETECTED = frozenset((
    "ar bg bn ca cs da de el en es et fa fi fr he hi hr hu id it ja ko lt lv ms nl no pl pt ro ru sk sl sr sv "
    "ta th tr uk ur vi zh").split())
_CODE = re.compile(r"[a-z]{2}")


def normalize_code(raw: str) -> str:
    """A language as given in a file -> its ISO 639-1 code: lowercased, the region or script dropped.

    >>> normalize_code("en"), normalize_code("pt-BR"), normalize_code("zh_Hans"), normalize_code(" DE ")
    ('en', 'pt', 'zh', 'de')
    >>> normalize_code("English")
    Traceback (most recent call last):
    ...
    ValueError: expected an ISO 639-1 language code such as 'en', 'de' or 'pt-BR', found 'English'
    """
    code = re.split(r"[-_]", str(raw).strip(), maxsplit=1)[0].lower()
    if not _CODE.fullmatch(code):
        raise ValueError(f"expected an ISO 639-1 language code such as 'en', 'de' or 'pt-BR', found {raw!r}")
    return code


@functools.lru_cache(maxsize=1)
def _identifier():
    """py3langid's model (about 2 s to load), limited to `DETECTED`."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(sorted(DETECTED))
    return identifier


def load_detector() -> None:
    """Load the detector now (about 2 s) rather than with the first text: what an index whose queries
    will be detected (a catalog in several languages) does when it is built, so that a service pays
    it as it starts."""
    _identifier()


def has_letters(text: str | None) -> bool:
    return bool(text) and any(c.isalpha() for c in text)


def probabilities(texts: Sequence[str | None]) -> tuple[list[str], np.ndarray]:
    """The detector's languages, and (len(texts), languages) the probability of each for each text;
    a row of zeros for a text without letters."""
    identifier = _identifier()
    codes = list(identifier.nb_classes)
    out = np.zeros((len(texts), len(codes)), dtype=np.float64)
    for n, text in enumerate(texts):
        if has_letters(text):
            # the probabilities behind py3langid's classify and rank, all at once (py3langid is pinned)
            out[n] = identifier._decide(text[:DETECT_CHARS])
    return codes, out


def detect(text: str | None) -> tuple[str | None, float]:
    """The most probable language of `text` on its own, and its probability; (None, 0.0) for a text
    without letters.

    >>> detect("Wie viele Punkte gab die Verteidigung ab?")[0], detect("3/4"), detect("screen door")[0]
    ('de', (None, 0.0), 'nl')
    """
    codes, p = probabilities([text])
    if not p.any():
        return None, 0.0
    best = int(p[0].argmax())
    return codes[best], float(p[0, best])


def _weighed(codes: list[str], p: np.ndarray, prior: Mapping[str, float]) -> list[str | None]:
    """The language of each row of `p` most probable under `prior` (weights by language)."""
    weights = np.array([prior.get(code, 0.0) for code in codes])
    if not weights.any():
        return [None] * len(p)
    posterior = p * weights
    best = posterior.argmax(axis=1)
    return [codes[b] if posterior[n, b] > 0 else None for n, b in enumerate(best)]


def detect_languages(texts: Sequence[str | None], known: Mapping[str, int] | None = None) -> list[str | None]:
    """The language of each text, weighed by how common each language is among them: the prior is
    the count of texts detected with probability >= CONFIDENT, plus `known` (counts of the languages
    already stored beside them); with neither, the language most probable over all the texts
    together. None for a text without letters.

    >>> detect_languages(["How many points did the defense give up?", "screen door", "1/2"], known={"en": 20})
    ['en', 'en', None]
    """
    codes, p = probabilities(texts)
    best = p.argmax(axis=1)
    confident = p[np.arange(len(p)), best] >= CONFIDENT
    prior: Counter[str] = Counter({code: float(n) for code, n in (known or {}).items()})
    prior.update(codes[b] for b in best[confident])
    if not prior and p.any():
        prior = Counter({codes[int(p.sum(axis=0).argmax())]: 1.0})
    return _weighed(codes, p, prior)


def stored_languages(records: Sequence[Mapping]) -> list[str | None]:
    """The `language` each record (an item's, a pair's) stores; None where it has none (to detect).

    >>> stored_languages([{"language": "de"}, {"title": "Stuhl"}])
    ['de', None]
    """
    return [r.get("language") for r in records]


def complete_languages(texts: Sequence[str | None], languages: Sequence[str | None] | None = None) -> list[str | None]:
    """Each text's language: the one given (`languages[i]`), else detected as `detect_languages` does,
    the given ones counting as known.

    >>> complete_languages(["Das Haus am See", "Häuser", "12"], ["de", None, None])
    ['de', 'de', None]
    """
    if languages is None:
        return detect_languages(texts)
    out = list(languages)
    missing = [n for n, code in enumerate(out) if code is None]
    if missing:
        known = Counter(code for code in out if code is not None)
        for n, code in zip(missing, detect_languages([texts[n] for n in missing], known)):
            out[n] = code
    return out


def language_among(text: str | None, languages: Mapping[str, int]) -> str | None:
    """The language of one text (a query) searched among items in `languages` (counts by language):
    the most probable given its letters and how common each language is among the items; with no
    items' language known, the most probable on its own. None for a text without letters.

    >>> language_among("screen door", {"en": 40}), language_among("puerta mosquitera", {"en": 40, "es": 40})
    ('en', 'es')
    """
    if not languages:
        return detect(text)[0]
    if not has_letters(text):
        return None
    if len(languages) == 1:
        return next(iter(languages))
    codes, p = probabilities([text])
    return _weighed(codes, p, languages)[0] or max(sorted(languages), key=languages.__getitem__)
