"""The `relkit` app: its group, options every command shares, and small helpers for the commands.

relkit's stages load DuckDB, numpy or scikit-learn when they are imported: each command imports the
ones it uses (`# lazy:` says what such an import loads), so `relkit --help` starts fast."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from relkit.config import defaults
from relkit.errors import RelkitError
from relkit.logs import install


class _Commands(TyperGroup):
    """Every command reports a RelkitError as one line and exits 2, instead of a traceback."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except RelkitError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(help="relkit: train and evaluate search relevance models from human judgments.", cls=_Commands,
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(emoji=False)      # results (a name like teacher:zero stays as written)
err = Console(stderr=True, emoji=False)   # messages (through the log handler), bars and errors
logger = logging.getLogger(__name__)

WorkspaceOpt = Annotated[Path, typer.Option(
    "--workspace", "-w", envvar="RELKIT_WORKSPACE", show_default=True,
    help="Workspace directory (default: $RELKIT_WORKSPACE, else ./relkit-ws).")]
DEFAULT_WS = Path("relkit-ws")


@app.callback()
def _options(
    ctx: typer.Context,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Say only warnings and errors: no progress "
                                                               "messages, no progress bars.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also say debug messages.")] = False,
) -> None:
    """Options of every command: how much relkit says on stderr while it works (results go to stdout)."""
    if quiet and verbose:
        err.print("[bold red]error:[/] --quiet and --verbose contradict each other; give one", highlight=False)
        raise typer.Exit(2)
    ctx.call_on_close(install(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO, err))
    command = ctx.command.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
    shown = library_defaults(ctx.invoked_subcommand) if command is not None else {}
    for param in getattr(command, "params", []):
        if param.name in shown:
            param.show_default = _as_shown(param.name, shown[param.name])


def library_defaults(command: str) -> dict[str, object]:
    """The default of each option of `command` that the library owns: a config dataclass's field or a
    function's parameter. Such an option is None in the CLI, so the library's own default applies, and
    its --help shows this value, read when the command is invoked."""
    match command:
        case "init":
            from relkit.scale import LabelScale  # lazy: numpy
            return {"levels": defaults(LabelScale.default)["k"]}
        case "split":
            from relkit.data.splits import SplitConfig  # lazy: duckdb
            return defaults(SplitConfig, "seed", "dev", "test")
        case "eval":
            from relkit.evaluate import evaluate  # lazy: duckdb, scikit-learn
            return defaults(evaluate, "split")
        case "report":
            from relkit.report.data import build  # lazy: duckdb, scikit-learn
            return defaults(build, "split")
        case "teach":
            from relkit.teacher.config import TrainConfig  # lazy: numpy
            return defaults(TrainConfig, "model", "epochs", "lr", "batch_size", "max_length", "class_weights",
                            "primary", "lora")
        case "ablate":
            from relkit.ablation import ablate  # lazy: duckdb, scikit-learn
            return defaults(ablate, "fields", "split", "prefix")
        case "caption":
            from relkit.captions import caption_items  # lazy: duckdb
            return {**defaults(caption_items, "model", "batch_size", "timeout"),
                    "max_mb": _megabytes(defaults(caption_items)["max_bytes"])}
        case "engaged":
            from relkit.features.engagement import EngagedQueriesConfig  # lazy: duckdb
            found = defaults(EngagedQueriesConfig)
            return {"top": found["top_n"], "days": found["window_days"]}
        case "pairs":
            from relkit.candidates import make_pairs  # lazy: duckdb
            return defaults(make_pairs, "k", "encoder", "min_queries", "query_source")
        case "label":
            from relkit.labeling import label_pairs  # lazy: duckdb
            return defaults(label_pairs, "shard_size", "batch_size", "backend", "engine", "ray_actors")
        case "judge":
            from relkit.judge import Judge, JudgeSpec  # lazy: duckdb
            return {**defaults(JudgeSpec, "key_env", "shots", "concurrency", "rpm", "retries", "timeout", "logprobs",
                               "batch_size"), **defaults(Judge.run, "shard_size")}
        case "distill":
            from relkit.student.features import FeatureConfig  # lazy: duckdb
            from relkit.student.model import StudentConfig
            return {**defaults(StudentConfig, "hidden", "human_weight"),
                    **defaults(FeatureConfig, "groups", "encoder", "graph_dim", "image_encoder")}
        case "serve":
            from relkit.serve import Limits, serve  # lazy: duckdb, fastapi
            from relkit.serve.replicas import serve_on_ray
            limits = defaults(Limits, "max_candidates", "max_body_bytes")
            return {**defaults(serve, "host", "port", "poll_seconds", "warm_queries"),
                    **defaults(serve_on_ray, "replicas"),
                    "max_candidates": limits["max_candidates"], "max_body_mb": _megabytes(limits["max_body_bytes"])}
    return {}


def _megabytes(n: int) -> float:
    """Bytes in the unit of the MB options (1,000,000 bytes): 4 for 4,000,000."""
    return int(n / 1e6) if (n / 1e6).is_integer() else n / 1e6


def _as_shown(name: str, value) -> str:
    """A default as its option takes it: a flag by its name (as typer shows one), a sequence comma-separated."""
    if isinstance(value, bool):
        return name.replace("_", "-") if value else "no-" + name.replace("_", "-")
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def _given(**options) -> dict:
    """The options given on the command line (the library's defaults apply to the others)."""
    return {k: v for k, v in options.items() if v is not None}


def _busy(text: str):
    """A spinner with `text` while a step without a bar runs, unless messages are off (--quiet)."""
    return console.status(text) if logging.getLogger("relkit").isEnabledFor(logging.INFO) else contextlib.nullcontext()


def _open(path: Path):
    from relkit.annotation.store import merge  # lazy: sqlite3, hashlib (20 ms of `relkit --help`)
    from relkit.workspace import Workspace  # lazy: duckdb

    ws = Workspace.open(path)
    try:
        merge(ws)   # judgments people made in `relkit annotate` since the last command
    except BaseException:
        ws.close()
        raise
    return ws


def _csv_ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise RelkitError(f"{what} must be whole numbers separated by commas, got '{text}'") from None
