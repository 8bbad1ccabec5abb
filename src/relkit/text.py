"""Item record -> the text models read. One template, saved with every model that used it, so
training and prediction always build the same text.

An item's text joins its fields in a fixed order, one per line: its title and description, a
synthetic caption of its image, the tokens of the queries that led to engagement with it, the
titles of the boards it was saved to, its link's title and description. Each field has a budget
in words (whitespace tokens: the same for every model's tokenizer) and a short label, and a field
the item lacks drops out.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from relkit.errors import RelkitError

BLANK = " \t\n\r\f\v"   # what is trimmed from a query as the service keys it


@dataclass(frozen=True)
class TextField:
    name: str          # the item record's key
    label: str = ""    # written as "label: value"; "" = the value alone
    max_words: int = 64


# Every field an item text can use, in the order they are joined. The item's own words (title,
# description) go unlabeled; text from elsewhere is labeled so a model can tell it apart.
FIELDS: dict[str, TextField] = {f.name: f for f in (
    TextField("title", "", 32),
    TextField("description", "", 200),
    TextField("caption", "image", 40),
    TextField("engaged_queries", "searched", 16),
    TextField("board_titles", "boards", 24),
    TextField("link_title", "link", 24),
    TextField("link_description", "link text", 48),
)}
TEXT_FIELDS: tuple[str, ...] = tuple(FIELDS)


@dataclass(frozen=True)
class ItemTextTemplate:
    """Which fields make the item text, in order, each with its label and word budget.

    >>> ItemTextTemplate.parse("title,description:5").render({"title": "Red chair",
    ...                                                       "description": "a  chair in red oak, solid and low"})
    'Red chair\\na chair in red oak,'
    """

    fields: tuple[TextField, ...] = tuple(FIELDS.values())

    @classmethod
    def parse(cls, spec: str) -> "ItemTextTemplate":
        """From `name[:max_words],...`, e.g. `title,description:100,caption`."""
        fields = []
        for part in [p.strip() for p in spec.split(",") if p.strip()]:
            name, _, budget = part.partition(":")
            if name not in FIELDS:
                raise RelkitError(f"unknown item text field '{name}'; the fields are {', '.join(FIELDS)}")
            field = FIELDS[name]
            if budget:
                if not budget.isdigit() or int(budget) < 1:
                    raise RelkitError(f"the word budget of '{name}' must be a positive whole number, not '{budget}'")
                field = TextField(name, field.label, int(budget))
            fields.append(field)
        if not fields:
            raise RelkitError("an item text template needs at least one field")
        if len({f.name for f in fields}) != len(fields):
            raise RelkitError(f"a field is named twice in '{spec}'")
        return cls(tuple(fields))

    @classmethod
    def from_list(cls, fields: Sequence[str | Mapping]) -> "ItemTextTemplate":
        """From a saved template: field names (the default label and budget) or full field dicts."""
        return cls(tuple(FIELDS[f] if isinstance(f, str) else TextField(**f) for f in fields))

    def to_list(self) -> list[dict]:
        return [{"name": f.name, "label": f.label, "max_words": f.max_words} for f in self.fields]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def describe(self) -> str:
        return ", ".join(f"{f.name} ({f.max_words} words)" for f in self.fields)

    def render(self, item: Mapping[str, object]) -> str:
        parts = []
        for field in self.fields:
            value = item.get(field.name)
            if isinstance(value, (list, tuple)):
                value = "; ".join(str(v) for v in value if v is not None and str(v).strip())
            if value is None:
                continue
            words = str(value).split()[:field.max_words]
            if words:
                text = " ".join(words)
                parts.append(f"{field.label}: {text}" if field.label else text)
        return "\n".join(parts)


DEFAULT_TEMPLATE = ItemTextTemplate()


def item_text(item: Mapping[str, object], template: ItemTextTemplate | None = None) -> str:
    """The text of an item record under `template` (default: every field, in the standard order).

    >>> item_text({"title": "Red chair", "description": None, "board_titles": ["Porch", "Reading"]})
    'Red chair\\nboards: Porch; Reading'
    """
    return (template or DEFAULT_TEMPLATE).render(item)


def item_title(item: Mapping[str, object]) -> str:
    """The item's title as text ("" when it has none): what a text-match feature's title coverage reads.

    >>> item_title({"title": None}), item_title({"title": "Red chair"})
    ('', 'Red chair')
    """
    return str(item.get("title") or "")


def normalize_space(text: str) -> str:
    """Collapse runs of whitespace and trim: queries that differ only in spacing are one query."""
    return re.sub(r"\s+", " ", text).strip()
