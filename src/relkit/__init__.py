"""relkit: turn a few thousand human relevance judgments into a search relevance model.

The names below load on first use, so `relkit --help` and other light commands start without
importing DuckDB, pyarrow, scikit-learn or torch.
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

_EXPORTS = {
    "KINDS": "relkit.data.importer", "ImportResult": "relkit.data.importer", "import_file": "relkit.data.importer",
    "SplitConfig": "relkit.data.splits", "pin_from_file": "relkit.data.splits", "split_queries": "relkit.data.splits",
    "InputError": "relkit.errors", "RelkitError": "relkit.errors",
    "EvalReport": "relkit.evaluate", "JudgedPairs": "relkit.labels", "Prediction": "relkit.evaluate",
    "System": "relkit.evaluate", "evaluate": "relkit.evaluate", "load_judged_pairs": "relkit.labels",
    "LabelScale": "relkit.scale", "SYSTEMS": "relkit.systems", "make_system": "relkit.systems",
    "item_text": "relkit.text", "Workspace": "relkit.workspace",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'relkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # importing the submodule relkit.evaluate binds it here; the name stays the function evaluate
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
