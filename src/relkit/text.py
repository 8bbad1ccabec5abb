"""Item record -> the text models read. One function, so training and serving agree."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

TEXT_FIELDS: tuple[str, ...] = ("title", "description")


def item_text(item: Mapping[str, object], fields: Sequence[str] = TEXT_FIELDS) -> str:
    """Join the item's non-empty fields, in order, one per line.

    >>> item_text({"title": "Red chair", "description": None})
    'Red chair'
    """
    parts = []
    for name in fields:
        value = item.get(name)
        if isinstance(value, (list, tuple)):
            value = "; ".join(str(v) for v in value)
        if value is not None and str(value).strip():
            parts.append(str(value).strip())
    return "\n".join(parts)


def normalize_space(text: str) -> str:
    """Collapse runs of whitespace and trim: queries that differ only in spacing are one query."""
    return re.sub(r"\s+", " ", text).strip()
