"""Settings are dataclasses, read one way everywhere: a JSON file, then `KEY=VALUE` strings (the
CLI's `--set`), then flags, each over the one before. A key the dataclass lacks is refused, naming
the key and the ones it has; a `--set` value is converted by the field's type. The defaults come
from the dataclass itself (or a function's signature), which is what `relkit --help` shows.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Fit:
    ...     epochs: int = 3
    ...     lr: float = 1e-3
    ...     hidden: tuple[int, ...] = (64, 32)
    >>> collect(Fit, sets=["lr=0.01", "hidden=128,64"], flags={"epochs": 5, "lr": None})
    {'lr': 0.01, 'hidden': (128, 64), 'epochs': 5}
    >>> from_dict(Fit, {"epochs": 5})
    Fit(epochs=5, lr=0.001, hidden=(64, 32))
    >>> defaults(Fit, "lr", "hidden")
    {'lr': 0.001, 'hidden': (64, 32)}
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from relkit.errors import RelkitError

T = TypeVar("T")
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


def names(cls: type) -> list[str]:
    """The settings a dataclass has, in its order."""
    return [f.name for f in dataclasses.fields(cls)]


def defaults(source: Any, *only: str) -> dict[str, Any]:
    """The default of each field of the dataclass `source` (or each parameter of the function
    `source`) that has one, read now: a changed default shows at once. `only`: just these names."""
    if dataclasses.is_dataclass(source):
        found = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                 for f in dataclasses.fields(source)
                 if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    else:
        found = {name: p.default for name, p in inspect.signature(source).parameters.items()
                 if p.default is not inspect.Parameter.empty}
    return {name: found[name] for name in only} if only else found


def from_dict(cls: type[T], values: dict, what: str = "option") -> T:
    """`cls(**values)`, refusing a key `cls` has no field for (`what` names the settings in the
    message, e.g. "training option")."""
    _refuse_unknown(cls, values, what)
    return cls(**values)


def read_file(path: Path, what: str = "options") -> dict:
    """The JSON object in `path`, as it is (its keys are checked where it is used)."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RelkitError(f"{path}: not a readable JSON object of {what} ({e})") from None
    if not isinstance(values, dict):
        raise RelkitError(f"{path}: not a readable JSON object of {what} (it holds a {type(values).__name__})")
    return values


def parse_sets(entries: Iterable[str], cls: type) -> dict:
    """`KEY=VALUE` strings as values of the dataclass `cls`'s fields, each converted by its type
    (int, float, bool, str, X | None, tuple[X, ...] as comma-separated values); `-` in a key is `_`."""
    hints = typing.get_type_hints(cls)
    known = names(cls)
    out = {}
    for entry in entries:
        key, sep, raw = entry.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise RelkitError(f"--set takes KEY=VALUE with KEY one of {', '.join(known)}; got '{entry}'")
        out[key] = convert(key, raw.strip(), hints[key])
    return out


def collect(cls: type, file: Path | None = None, sets: Iterable[str] | None = None, flags: dict | None = None,
            what: str = "option") -> dict:
    """The settings given for the dataclass `cls`: the JSON file's, then `sets` (`KEY=VALUE`), then
    the `flags` that are not None, each over the one before; only the keys given (`cls`'s defaults
    apply to the others). `what` names the settings in messages, e.g. "training option"."""
    values = read_file(file, what + "s") if file is not None else {}
    values.update(parse_sets(sets or [], cls))
    values.update({key: value for key, value in (flags or {}).items() if value is not None})
    _refuse_unknown(cls, values, what)
    return values


def _refuse_unknown(cls: type, values: dict, what: str) -> None:
    known = names(cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise RelkitError(f"unknown {what}(s): {', '.join(unknown)}; the {what}s are {', '.join(known)}")


def convert(key: str, raw: str, hint: Any) -> Any:
    """The text `raw` of setting `key` as a value of the type `hint`."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    try:
        if hint is bool:
            if raw.lower() not in TRUE + FALSE:
                raise ValueError(raw)
            return raw.lower() in TRUE
        if hint in (int, float, str):
            return hint(raw)
        if typing.get_origin(hint) is tuple:
            return tuple(args[0](part.strip()) for part in raw.split(",") if part.strip())
    except ValueError:
        shown = "comma-separated numbers" if typing.get_origin(hint) is tuple else f"a valid {hint.__name__}"
        raise RelkitError(f"--set {key}: '{raw}' is not {shown}") from None
    raise RelkitError(f"--set {key}: this option cannot be set from the command line")


__all__ = ["collect", "convert", "defaults", "from_dict", "names", "parse_sets", "read_file"]
