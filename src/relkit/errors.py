"""Errors relkit raises on purpose. Anything else is a bug."""
from __future__ import annotations

from pathlib import Path


class RelkitError(Exception):
    """A problem the user can fix: bad input, a missing workspace, an unknown system."""


class InputError(RelkitError):
    """Bad data in a file the user gave, located as precisely as relkit can.

    >>> str(InputError("expected an integer", file="j.csv", line=3, field="label"))
    "j.csv, line 3, field 'label': expected an integer"
    """

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None,
                 field: str | None = None, column: str | None = None, unit: str = "line"):
        self.message = message
        self.file = None if file is None else str(file)
        self.line = line
        self.field = field
        self.column = column  # the file's name for `field`, where the two differ
        self.unit = unit
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [p for p in (
            self.file,
            None if self.line is None else f"{self.unit} {self.line}",
            None if self.field is None else f"field '{self.field}'"
            + (f" (column '{self.column}')" if self.column and self.column != self.field else ""),
        ) if p]
        return f"{', '.join(where)}: {self.message}" if where else self.message
