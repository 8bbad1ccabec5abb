"""The label scale: K ordered relevance levels, numbered 1..K, each with a name and a gain.

Level 1 is the least relevant. Gains are what nDCG credits for an item at that level and what a
model's ranking score is the expectation of; they are non-negative integers (the trec_eval
convention that ir-measures implements), by default 0, 1, ..., K-1.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from relkit.errors import RelkitError

# Names by scale size; five levels is the scale Pinterest's raters use.
DEFAULT_NAMES: dict[int, tuple[str, ...]] = {
    2: ("not relevant", "relevant"),
    3: ("not relevant", "partly relevant", "relevant"),
    4: ("not relevant", "somewhat relevant", "relevant", "highly relevant"),
    5: ("not relevant", "slightly relevant", "somewhat relevant", "relevant", "highly relevant"),
}


@dataclass(frozen=True)
class LabelScale:
    """K ordered levels. Build with `LabelScale.default(k)` or from names and gains.

    >>> s = LabelScale.default(5)
    >>> s.k, s.names[0], s.gains
    (5, 'not relevant', (0, 1, 2, 3, 4))
    >>> s.parse("highly relevant"), s.parse("3")
    (5, 3)
    """

    names: tuple[str, ...]
    gains: tuple[int, ...]

    def __post_init__(self) -> None:
        names, gains = tuple(self.names), tuple(self.gains)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "gains", gains)
        if len(names) < 2:
            raise RelkitError(f"a label scale needs at least 2 levels, got {len(names)}")
        if len(gains) != len(names):
            raise RelkitError(f"the scale has {len(names)} level names but {len(gains)} gains")
        if any(not n.strip() for n in names):
            raise RelkitError("level names must not be empty")
        folded = [n.strip().lower() for n in names]
        if len(set(folded)) != len(folded):
            raise RelkitError(f"level names must be distinct, got {list(names)}")
        if any(n.strip().isdigit() for n in names):
            raise RelkitError(f"level names must not be numbers (numbers mean levels), got {list(names)}")
        if any(not isinstance(g, (int, np.integer)) or isinstance(g, bool) or g < 0 for g in gains):
            raise RelkitError(f"gains must be non-negative integers, got {list(gains)}")
        if any(b < a for a, b in zip(gains, gains[1:])):
            raise RelkitError(f"gains must not decrease from level 1 to level {len(gains)}, got {list(gains)}")

    @classmethod
    def default(cls, k: int = 5) -> "LabelScale":
        if k < 2:
            raise RelkitError(f"a label scale needs at least 2 levels, got {k}")
        names = DEFAULT_NAMES.get(k) or tuple(f"level {i}" for i in range(1, k + 1))
        return cls(names=names, gains=tuple(range(k)))

    @property
    def k(self) -> int:
        return len(self.names)

    @property
    def levels(self) -> list[int]:
        return list(range(1, self.k + 1))

    def parse(self, raw: object) -> int | None:
        """The level a raw label stands for (its number 1..K or its name), or None."""
        if raw is None or isinstance(raw, bool):
            return None
        if isinstance(raw, (int, np.integer)):
            level = int(raw)
        elif isinstance(raw, (float, np.floating)):
            if not float(raw).is_integer():
                return None
            level = int(raw)
        else:
            text = str(raw).strip()
            try:
                as_float = float(text)
            except ValueError:
                folded = text.lower()
                for i, name in enumerate(self.names, start=1):
                    if name.lower() == folded:
                        return i
                return None
            if not as_float.is_integer():
                return None
            level = int(as_float)
        return level if 1 <= level <= self.k else None

    def describe(self) -> str:
        return ", ".join(f"{i} = {n}" for i, n in enumerate(self.names, start=1))

    def expected_gain(self, proba: np.ndarray) -> np.ndarray:
        """Ranking score of an (n, K) distribution: its expected gain."""
        return np.asarray(proba, dtype=np.float64) @ np.asarray(self.gains, dtype=np.float64)

    def to_json(self) -> str:
        return json.dumps({"names": list(self.names), "gains": list(self.gains)})

    @classmethod
    def from_json(cls, text: str) -> "LabelScale":
        d = json.loads(text)
        return cls(names=tuple(d["names"]), gains=tuple(d["gains"]))
