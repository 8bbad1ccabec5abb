"""Read CSV, JSONL and Parquet files into columns, remembering where each record came from."""
from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from relkit.errors import InputError

FORMATS = ("csv", "jsonl", "parquet")
_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
             ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class Records:
    """The rows of one file, column by column. `lines[i]` is where row i starts in the file (a line
    number for CSV and JSONL, a 1-based row number for Parquet: see `unit`)."""

    path: Path
    columns: dict[str, list]
    lines: list[int]
    unit: str = "line"
    renamed: dict[str, str] = field(default_factory=dict)  # field -> the file's column name

    def __len__(self) -> int:
        return len(self.lines)

    def error(self, message: str, row: int | None = None, field: str | None = None) -> InputError:
        """An InputError located at row `row` (an index into this object) and `field`."""
        line = None if row is None else self.lines[row]
        return InputError(message, file=self.path, line=line, field=field, column=self.renamed.get(field),
                          unit=self.unit)

    def rename(self, mapping: dict[str, str], origin: str = "--map") -> None:
        """Rename columns (`{file column: relkit field}`); a column not in the file is an error."""
        for source, target in mapping.items():
            if source not in self.columns:
                raise InputError(f"{origin} reads column '{source}', which the file does not have "
                                 f"(columns: {', '.join(self.columns)})", file=self.path)
        renamed = {}
        for name, values in self.columns.items():
            target = mapping.get(name, name)
            if target in renamed:
                raise InputError(f"two columns map to the field '{target}'", file=self.path)
            renamed[target] = values
            self.renamed[target] = self.renamed.get(name, name)
        self.columns = renamed


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise InputError(f"cannot tell the file format from its name; expected one of "
                         f"{', '.join(sorted(_SUFFIXES))} (optionally .gz)", file=path)
    return fmt


def read_records(path: str | os.PathLike, encoding: str = "utf-8") -> Records:
    """Read a CSV (header row), JSONL (one object a line) or Parquet file.

    Text is decoded strictly in `encoding`: a byte that is not valid there is an error naming
    its line, never a silent replacement. An empty file, or one with a header and no rows, is
    an error.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", file=path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"unknown encoding '{encoding}'", file=path) from None
    fmt = detect_format(path)
    if fmt == "parquet":
        return _read_parquet(path)
    try:
        if fmt == "csv":
            return _read_csv(path, encoding)
        return _read_jsonl(path, encoding)
    except UnicodeDecodeError as e:
        raise _locate_decode_error(path, encoding, e) from None


def _open_text(path: Path, encoding: str) -> io.TextIOBase:
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"  # a byte-order mark is not part of the first column's name
    raw = gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")


def _read_csv(path: Path, encoding: str) -> Records:
    csv.field_size_limit(sys.maxsize)
    delimiter = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
    with _open_text(path, encoding) as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise InputError("the file is empty", file=path)
        header = [h.strip() for h in header]
        if any(not h for h in header):
            raise InputError(f"the header has an empty column name (columns: {header})", file=path, line=1)
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise InputError(f"the header repeats column(s) {', '.join(dupes)}", file=path, line=1)
        columns: dict[str, list] = {h: [] for h in header}
        lists = list(columns.values())
        lines: list[int] = []
        start = reader.line_num + 1
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                start = reader.line_num + 1
                continue  # blank line
            if len(row) != len(header):
                raise InputError(f"expected {len(header)} fields as in the header, found {len(row)}",
                                 file=path, line=start)
            for values, value in zip(lists, row):
                values.append(value if value != "" else None)  # CSV has no null; empty means absent
            lines.append(start)
            start = reader.line_num + 1
    if not lines:
        raise InputError("the file has a header but no rows", file=path)
    return Records(path=path, columns=columns, lines=lines)


def _read_jsonl(path: Path, encoding: str) -> Records:
    rows: list[dict] = []
    lines: list[int] = []
    with _open_text(path, encoding) as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(f"not valid JSON ({e.msg} at column {e.colno})", file=path, line=number) from None
            if not isinstance(obj, dict):
                raise InputError(f"expected a JSON object, found {type(obj).__name__}", file=path, line=number)
            rows.append(obj)
            lines.append(number)
    if not rows:
        raise InputError("the file is empty", file=path)
    names: dict[str, None] = {}
    for obj in rows:
        names.update(dict.fromkeys(obj))
    columns = {n: [_none_if_blank(obj.get(n)) for obj in rows] for n in names}
    return Records(path=path, columns=columns, lines=lines)


def _read_parquet(path: Path) -> Records:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged or foreign file
        raise InputError(f"not a readable Parquet file ({e})", file=path) from None
    if table.num_rows == 0:
        raise InputError("the file has no rows", file=path)
    columns = {n: [_none_if_blank(v) for v in table.column(n).to_pylist()] for n in table.column_names}
    return Records(path=path, columns=columns, lines=list(range(1, table.num_rows + 1)), unit="row")


def _none_if_blank(value):
    return None if isinstance(value, str) and value == "" else value


def _locate_decode_error(path: Path, encoding: str, error: UnicodeDecodeError) -> InputError:
    """Find the line holding the first byte sequence that `encoding` cannot decode."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as e:
                bad = raw[e.start:e.end]
                what = f"byte 0x{bad.hex()} is" if len(bad) == 1 else f"bytes {bad.hex(' ')} are"
                return InputError(f"{what} not valid {encoding} (at column {e.start + 1}) "
                                  f"(give the file's encoding with --encoding, e.g. latin-1)",
                                  file=path, line=number)
    return InputError(f"not valid {encoding}: {error.reason}", file=path)


def whitespace_rows(path: Path, fields: int, layout: str):
    """(line number, fields) of each non-blank line of a whitespace-separated TREC file (qrels, run
    files), refusing a line without exactly `fields` fields, named by `layout`."""
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            parts = text.split()
            if not parts:
                continue
            if len(parts) != fields:
                raise InputError(f"expected {fields} whitespace-separated fields ({layout}), got {len(parts)}; "
                                 f"a CSV needs a .csv name", file=path, line=line)
            yield line, parts
