"""relkit: turn a few thousand human relevance judgments into a search relevance model."""
__version__ = "0.1.0"

from relkit.data.importer import KINDS, ImportResult, import_file  # noqa: E402
from relkit.data.splits import SplitConfig, pin_from_file, split_queries  # noqa: E402
from relkit.errors import InputError, RelkitError  # noqa: E402
from relkit.evaluate import EvalReport, JudgedPairs, Prediction, System, evaluate, load_judged_pairs  # noqa: E402
from relkit.scale import LabelScale  # noqa: E402
from relkit.systems import SYSTEMS, make_system  # noqa: E402
from relkit.text import item_text  # noqa: E402
from relkit.workspace import Workspace  # noqa: E402

__all__ = [
    "KINDS", "SYSTEMS", "EvalReport", "ImportResult", "InputError", "JudgedPairs", "LabelScale", "Prediction",
    "RelkitError", "SplitConfig", "System", "Workspace", "__version__", "evaluate", "import_file", "item_text",
    "load_judged_pairs", "make_system", "pin_from_file", "split_queries",
]
