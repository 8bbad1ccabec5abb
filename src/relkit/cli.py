"""The `relkit` command. Each command parses its options and calls the library.

relkit's stages load DuckDB, numpy or scikit-learn when they are imported: each command imports the
ones it uses (`# lazy:` says what such an import loads), so `relkit --help` starts fast."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from relkit.config import collect, defaults
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
            from relkit.scale import LabelScale   # lazy: numpy
            return {"levels": defaults(LabelScale.default)["k"]}
        case "split":
            from relkit.data.splits import SplitConfig   # lazy: duckdb
            return defaults(SplitConfig, "seed", "dev", "test")
        case "eval":
            from relkit.evaluate import evaluate   # lazy: duckdb, scikit-learn
            return defaults(evaluate, "split")
        case "report":
            from relkit.report.data import build   # lazy: duckdb, scikit-learn
            return defaults(build, "split")
        case "teach":
            from relkit.teacher.config import TrainConfig   # lazy: numpy
            return defaults(TrainConfig, "model", "epochs", "lr", "batch_size", "max_length", "class_weights",
                            "primary", "lora")
        case "ablate":
            from relkit.ablation import ablate   # lazy: duckdb, scikit-learn
            return defaults(ablate, "fields", "split", "prefix")
        case "caption":
            from relkit.captions import caption_items   # lazy: duckdb
            return {**defaults(caption_items, "model", "batch_size", "timeout"),
                    "max_mb": _megabytes(defaults(caption_items)["max_bytes"])}
        case "engaged":
            from relkit.features.engagement import EngagedQueriesConfig   # lazy: duckdb
            found = defaults(EngagedQueriesConfig)
            return {"top": found["top_n"], "days": found["window_days"]}
        case "pairs":
            from relkit.candidates import make_pairs   # lazy: duckdb
            return defaults(make_pairs, "k", "encoder", "min_queries", "query_source")
        case "label":
            from relkit.labeling import label_pairs   # lazy: duckdb
            return defaults(label_pairs, "shard_size", "batch_size", "backend", "engine", "ray_actors")
        case "judge":
            from relkit.judge import Judge, JudgeSpec   # lazy: duckdb
            return {**defaults(JudgeSpec, "key_env", "shots", "concurrency", "rpm", "retries", "timeout", "logprobs",
                               "batch_size"), **defaults(Judge.run, "shard_size")}
        case "distill":
            from relkit.student.features import FeatureConfig   # lazy: duckdb
            from relkit.student.model import StudentConfig
            return {**defaults(StudentConfig, "hidden", "human_weight"),
                    **defaults(FeatureConfig, "groups", "encoder", "graph_dim", "image_encoder")}
        case "serve":
            from relkit.serve import Limits, serve   # lazy: duckdb, fastapi
            limits = defaults(Limits, "max_candidates", "max_body_bytes")
            return {**defaults(serve, "host", "port", "poll_seconds", "warm_queries"),
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
    from relkit.annotation.store import merge   # lazy: sqlite3, hashlib (20 ms of `relkit --help`)
    from relkit.workspace import Workspace   # lazy: duckdb

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


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Directory to create the workspace in.")],
    levels: Annotated[int | None, typer.Option(
        help="Number of relevance levels K, numbered 1..K (or as many as --names).")] = None,
    names: Annotated[str | None, typer.Option(help="Level names from 1 to K, comma-separated.")] = None,
    gains: Annotated[str | None, typer.Option(
        help="nDCG gain of each level from 1 to K, comma-separated non-negative integers (default 0..K-1).")] = None,
) -> None:
    """Create a workspace: a DuckDB database and an artifacts/ folder, with its label scale."""
    from relkit.scale import LabelScale   # lazy: numpy
    from relkit.workspace import Workspace   # lazy: duckdb

    name_list = tuple(n.strip() for n in names.split(",")) if names else None
    k = levels or (len(name_list) if name_list else None)
    if name_list and len(name_list) != k:
        raise RelkitError(f"--levels {k} but --names gives {len(name_list)} names")
    default = LabelScale.default(**_given(k=k))
    scale = LabelScale(names=name_list or default.names,
                       gains=tuple(_csv_ints(gains, "--gains")) if gains else default.gains)
    with Workspace.create(directory, scale) as ws:
        console.print(f"created workspace {ws.path} with {ws.scale.k} levels: {ws.scale.describe()}")


@app.command(name="import")
def import_(
    kind: Annotated[str, typer.Argument(help="What the file holds: items, queries, judgments, pairs or engagement.")],
    file: Annotated[Path, typer.Argument(help="A CSV, JSONL or Parquet file (CSV/JSONL may be gzipped).")],
    format: Annotated[str | None, typer.Option(
        "--format", help="Read a known dataset as published: homedepot or crowdflower.")] = None,
    map: Annotated[list[str] | None, typer.Option(
        "--map", help="Rename a column: SOURCE=FIELD (repeatable), e.g. --map qid=query_id.")] = None,
    encoding: Annotated[str | None, typer.Option(help="Text encoding of CSV/JSONL files (default utf-8).")] = None,
    split: Annotated[str | None, typer.Option(
        help="Pin every query of the file to this split (train, dev or test), e.g. your fixed test set.")] = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Import a file into the workspace, all or nothing; importing the same data again changes nothing."""
    from relkit.data.importer import import_file   # lazy: duckdb, pyarrow

    mapping = {}
    for entry in map or []:
        source, sep, target = entry.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise RelkitError(f"--map takes SOURCE=FIELD, got '{entry}'")
        mapping[source.strip()] = target.strip()
    with _open(workspace) as ws, _busy(f"importing {file}"):
        result = import_file(ws, kind, file, format=format, mapping=mapping, encoding=encoding, split=split)
    console.print(result.summary(), highlight=False)


@app.command()
def split(
    seed: Annotated[int | None, typer.Option(
        help="Seed of the assignment (or the one the workspace was split with).")] = None,
    dev: Annotated[float | None, typer.Option(help="Fraction of queries for dev.")] = None,
    test: Annotated[float | None, typer.Option(help="Fraction of queries for test.")] = None,
    reset: Annotated[bool, typer.Option(help="Reassign every unpinned query (needed to change seed or fractions).")] = False,
    assign: Annotated[Path | None, typer.Option(
        help="Pin the queries listed in this file (one query id or query text a line) to --to.")] = None,
    to: Annotated[str, typer.Option(help="The split --assign pins to.")] = "test",
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Assign whole queries to train/dev/test. Stable: new queries never move old ones."""
    from relkit.data.splits import SplitConfig, pin_from_file, split_queries   # lazy: duckdb

    with _open(workspace) as ws:
        if assign is not None:
            n = pin_from_file(ws, assign, to)
            console.print(f"pinned {n:,} queries to {to}")
        config = None
        if seed is not None or dev is not None or test is not None:
            config = SplitConfig(**_given(seed=seed, dev=dev, test=test))
        summary = split_queries(ws, config, reset=reset)
        counts = ", ".join(f"{s} {n:,}" for s, n in summary.counts.items())
        console.print(f"assigned {summary.assigned:,} queries (seed {summary.config.seed}, dev {summary.config.dev}, "
                      f"test {summary.config.test}); queries per split: {counts}")


@app.command()
def status(workspace: WorkspaceOpt = DEFAULT_WS) -> None:
    """Show what the workspace holds."""
    with _open(workspace) as ws:
        console.print(ws.summary())


@app.command(name="eval")
def eval_(
    system: Annotated[list[str], typer.Option(
        "--system", "-s", help="A system to score: bm25, embedding[:MODEL], teacher:NAME, student:NAME or judge:NAME "
                               "(repeatable).")],
    split: Annotated[str | None, typer.Option(help="Split to evaluate on.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Score systems on the same judged queries and print them side by side."""
    from relkit.evaluate import evaluate   # lazy: duckdb, scikit-learn
    from relkit.systems import make_system   # lazy: duckdb

    with _open(workspace) as ws:
        report = evaluate(ws, [make_system(s, ws) for s in system], **_given(split=split))
    if json_:
        typer.echo(report.to_json())
    else:
        console.print(report)


@app.command()
def report(
    system: Annotated[list[str], typer.Option(
        "--system", "-s", help="A system, as in `relkit eval` (repeatable); the first is the one others are compared "
                               "with.")],
    split: Annotated[str | None, typer.Option(help="Split to report on.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    json_: Annotated[bool, typer.Option(
        "--json", help="Also write the numbers behind every plot and table to the same name with .json.")] = False,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Write one self-contained HTML report of systems on a split: side by side, levels, queries lost, studies."""
    from relkit.report import build, write   # lazy: duckdb, scikit-learn
    from relkit.systems import make_system

    if output.suffix.lower() not in (".html", ".htm"):
        raise RelkitError(f"--output is an HTML file (.html), got '{output}'")
    command = "relkit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with _open(workspace) as ws:
        systems = [make_system(s, ws) for s in system]
        data = build(ws, systems, command=command, **_given(split=split))
    path = write(data, output)
    console.print(f"wrote {path} ({path.stat().st_size / 1024:,.0f} KB)", highlight=False)
    if json_:
        numbers = path.with_suffix(".json")
        numbers.write_text(data.to_json())
        console.print(f"wrote {numbers}", highlight=False)


@app.command()
def teach(
    model: Annotated[str | None, typer.Option(
        help="Base model: a local path, a hub id, 'default' (all-MiniLM-L6-v2) or 'smollm2'.")] = None,
    name: Annotated[str | None, typer.Option(help="Save as artifacts/teacher-NAME (default: base-date-time).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the train split.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per micro-batch.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens of query + item text.")] = None,
    class_weights: Annotated[str | None, typer.Option(help="Loss weight per level: none, sqrt or inverse.")] = None,
    primary: Annotated[str | None, typer.Option(help="Dev metric that picks the weights to keep.")] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--no-lora", help="Train LoRA adapters instead of every weight.")] = None,
    labels: Annotated[str | None, typer.Option(
        help="human (the judgments, default) or judge:NAME: learn a judge's soft labels of the train queries' pairs, "
             "keep the weights best on its labels of the dev queries' pairs (no human label needed).")] = None,
    fields: Annotated[str | None, typer.Option(
        help="Item text fields as name[:max_words],... (default: all of title, description, caption, "
             "engaged_queries, board_titles, link_title, link_description).")] = None,
    config: Annotated[Path | None, typer.Option(help="A JSON file of training options (see relkit.teacher.TrainConfig).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Any training option as KEY=VALUE (repeatable), e.g. --set warmup=0.06.")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue the interrupted teacher NAME from its checkpoint.")] = None,
    stop_after: Annotated[int | None, typer.Option(help="Stop after this many steps, leaving a checkpoint.")] = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Fine-tune a cross-encoder teacher on the train split, keeping the best weights on dev."""
    from relkit.teacher.train import TrainConfig, train_teacher   # lazy: duckdb, scikit-learn

    options = collect(TrainConfig, config, set_, what="training option", flags=dict(
        model=model, name=name, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
        class_weights=class_weights, primary=primary, lora=lora, fields=fields, labels=labels))
    if resume is not None and options:
        raise RelkitError("--resume continues with the teacher's saved options; give no other training options")
    _open(workspace).close()   # people's judgments from `relkit annotate` into judgments first
    # the workspace is opened by the run while it reads its data: under `accelerate launch`, by
    # each process in turn
    result = train_teacher(workspace, None if resume else TrainConfig(**options), resume=resume,
                           stop_after=stop_after)
    if result.finished and result.main_process:
        shown = {k: round(v, 4) for k, v in result.dev_metrics.items() if isinstance(v, float)}
        console.print(f"saved {result.path} (step {result.best_step} of {result.steps}, "
                      f"{result.seconds / 60:.1f} min); dev: {shown}", highlight=False)


@app.command()
def ablate(
    fields: Annotated[str | None, typer.Option(help="Fields to add one at a time, in order; fields no item has "
                                                    "are left out.")] = None,
    split: Annotated[str | None, typer.Option(help="Split to score each teacher on.")] = None,
    prefix: Annotated[str | None, typer.Option(help="Teachers are saved as teacher-PREFIX-N-FIELD.")] = None,
    config: Annotated[Path | None, typer.Option(help="A JSON file of training options for every teacher.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="A training option KEY=VALUE (repeatable).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Train a teacher per item text prefix (title; + description; + caption; ...) and compare them."""
    from relkit.ablation import ablate as run_ablation, ablation_table, rows_as_dicts   # lazy: duckdb, scikit-learn
    from relkit.teacher.config import TrainConfig

    options = collect(TrainConfig, config, set_, what="training option")
    if "fields" in options or "name" in options:
        raise RelkitError("ablate sets each teacher's fields and name itself; use --fields and --prefix")
    with _open(workspace) as ws:
        chosen = [f.strip() for f in fields.split(",") if f.strip()] if fields is not None else None
        rows = run_ablation(ws, TrainConfig(**options), **_given(fields=chosen, split=split, prefix=prefix))
        aurocs = [f"auroc@{t}" for t in range(2, ws.scale.k + 1)]
    if json_:
        typer.echo(json.dumps(rows_as_dicts(rows), indent=2))
        return
    console.print(ablation_table(rows, ["accuracy", "qwk", *aurocs, "ndcg@10"]))


@app.command()
def caption(
    model: Annotated[str | None, typer.Option(help="A Hugging Face image-to-text model: hub id or local path.")]
        = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per batch.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for an image URL.")] = None,
    max_mb: Annotated[float | None, typer.Option(help="Largest image accepted, in MB (1,000,000 bytes).")] = None,
    redo: Annotated[bool, typer.Option(help="Caption again items already done by this model.")] = False,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Caption every item's image (local path or URL); captions join the item text as 'image: ...'."""
    from relkit.captions import caption_items   # lazy: duckdb

    with _open(workspace) as ws:
        result = caption_items(ws, redo=redo, **_given(model=model, batch_size=batch_size, timeout=timeout,
                                                       max_bytes=None if max_mb is None else int(max_mb * 1e6)))
    console.print(result.summary(), highlight=False)


@app.command()
def engaged(
    top: Annotated[int | None, typer.Option(help="Tokens kept per item.")] = None,
    days: Annotated[int | None, typer.Option(help="Window of engagement, in days, ending at --as-of.")] = None,
    as_of: Annotated[str | None, typer.Option(help="End of the window (ISO date); default the latest engagement.")] = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Recompute each item's engaged-query tokens (the text field 'searched: ...') from the engagement table."""
    from relkit.features.engagement import EngagedQueriesConfig, refresh_engaged_queries   # lazy: duckdb

    config = EngagedQueriesConfig(**_given(top_n=top, window_days=days, as_of=as_of))
    with _open(workspace) as ws, ws.transaction():
        n = refresh_engaged_queries(ws, config)
    console.print(f"{n:,} items have engaged-query tokens (top {config.top_n}, {config.window_days} days)",
                  highlight=False)


@app.command()
def pairs(
    k: Annotated[int | None, typer.Option(min=1, help="Items per query from each source.")] = None,
    source: Annotated[list[str] | None, typer.Option(
        help="bm25 and/or embedding (repeatable; default both).")] = None,
    encoder: Annotated[str | None, typer.Option(help="Bi-encoder for the embedding source: path or hub id.")] = None,
    min_queries: Annotated[int | None, typer.Option(min=0, help=(
        "First add train queries nobody judged until the train split has this many, for the teacher "
        "to label (0: add none)."))] = None,
    query_source: Annotated[str | None, typer.Option(help=(
        "Where added queries come from: log (the engagement log's, most shown first), titles (the "
        "phrases most frequent in item titles) or auto (the log when there is one, else titles)."))] = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Make unlabeled candidate pairs for the train queries: the catalog's top k by BM25 and by embedding.

    A student learns what the teacher knows from many queries, not from many items of a few: with
    fewer train queries than --min-queries, it first adds queries nobody judged (never one that
    matches a workspace query), marked in queries.extra with their source."""
    from relkit.candidates import SOURCES, make_pairs   # lazy: duckdb

    with _open(workspace) as ws:
        result = make_pairs(ws, sources=source or SOURCES, **_given(
            k=k, encoder=encoder, min_queries=min_queries, query_source=query_source))
    console.print(result.summary(), highlight=False)


@app.command()
def label(
    teacher: Annotated[str, typer.Option(help="The teacher: NAME (artifacts/teacher-NAME) or a path.")],
    shard_size: Annotated[int | None, typer.Option(min=1, help="Pairs per Parquet shard (the unit of resumption).")]
        = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Pairs per forward pass.")] = None,
    backend: Annotated[str | None, typer.Option(
        help="torch, onnx (ONNX Runtime) or onnx-int8 (dynamic int8 weights).")] = None,
    engine: Annotated[str | None, typer.Option(help="local (this process) or ray (Ray Data, the same output).")]
        = None,
    ray_address: Annotated[str | None, typer.Option(help="A Ray cluster to join (default: start a local Ray).")] = None,
    ray_actors: Annotated[int | None, typer.Option(min=1, help="Scoring actors in the Ray pool.")] = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Label the pairs table with a teacher's soft labels; a rerun labels only what is missing."""
    from relkit.labeling import label_pairs   # lazy: duckdb

    with _open(workspace) as ws:
        result = label_pairs(ws, teacher, ray_address=ray_address, **_given(
            shard_size=shard_size, batch_size=batch_size, backend=backend, engine=engine, ray_actors=ray_actors))
    console.print(result.summary(), highlight=False)


@app.command()
def judge(
    name: Annotated[str, typer.Option(help="The judge: stored as artifacts/judge-NAME, its labels as judge:NAME.")],
    model: Annotated[str | None, typer.Option(
        help="The LLM: the endpoint's model name, or (local) a causal LM folder, hub id or 'smollm2'. Omit to run "
             "the stored judge NAME again.")] = None,
    endpoint: Annotated[str | None, typer.Option(
        help="An OpenAI-compatible base URL (vLLM, llama.cpp server, Ollama, OpenAI), e.g. http://host:8080/v1; "
             "omit for a local transformers model.")] = None,
    key_env: Annotated[str | None, typer.Option(
        help="Environment variable holding the endpoint's API key (never stored).")] = None,
    gguf_file: Annotated[str | None, typer.Option(help="Local: a GGUF file inside the --model folder.")] = None,
    prompt: Annotated[Path | None, typer.Option(
        help="A prompt template file with ${rubric} ${guidelines} ${examples} ${k} ${query} ${item} "
             "(default: relkit's, copied to artifacts/judge-NAME/prompt.txt).")] = None,
    guidelines: Annotated[Path | None, typer.Option(help="A text file saying what each level means.")] = None,
    shots: Annotated[int | None, typer.Option(min=0, help="Few-shot examples drawn from the train judgments.")] = None,
    fields: Annotated[str | None, typer.Option(
        help="Item text fields as name[:max_words],... (as `relkit teach --fields`; default all).")] = None,
    split: Annotated[str | None, typer.Option(
        help="Judge the judged pairs of this split (train, dev, test: agreement with people) instead of the pairs "
             "table.")] = None,
    file: Annotated[Path | None, typer.Option(
        help="Judge the pairs of this file (CSV, JSONL or Parquet with query_id and item_id columns).")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Endpoint: requests in flight.")] = None,
    rpm: Annotated[float | None, typer.Option(min=0, help="Endpoint: requests per minute at most (0: no cap).")]
        = None,
    retries: Annotated[int | None, typer.Option(min=0, help="Endpoint: tries again on 429, 5xx and timeouts.")] \
        = None,
    timeout: Annotated[float | None, typer.Option(min=0.1, help="Endpoint: seconds per request.")] = None,
    logprobs: Annotated[bool | None, typer.Option(
        help="Endpoint: ask for the answer token's log-probabilities (a distribution, not one level).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Local: prompts per forward pass.")] = None,
    shard_size: Annotated[int | None, typer.Option(min=1, help="Labels per Parquet shard (kept as they arrive).")]
        = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """An LLM puts pairs on the workspace's scale; labels are cached, resumable and usable as a teacher's (judge:NAME)."""
    from relkit.judge import JudgeSpec, create_judge, load_judge, select_pairs   # lazy: duckdb

    with _open(workspace) as ws:
        if model is None:
            given = [flag for flag, value in (("--endpoint", endpoint), ("--gguf-file", gguf_file), ("--prompt", prompt),
                                              ("--guidelines", guidelines), ("--fields", fields)) if value]
            if given or shots:
                raise RelkitError(f"{', '.join(given + (['--shots'] if shots else []))} make a new judge: give --model "
                                  f"too (and another --name), or run the stored judge '{name}' with --name alone")
            judge = load_judge(ws, name)
        else:
            spec = JudgeSpec(name=name, model=model, backend="endpoint" if endpoint else "local", endpoint=endpoint,
                             gguf_file=gguf_file, fields=fields or "", **_given(
                                 key_env=key_env, concurrency=concurrency, rpm=rpm, retries=retries, timeout=timeout,
                                 logprobs=logprobs, batch_size=batch_size, shots=shots))
            judge = create_judge(ws, spec, prompt, guidelines)
        pairs = select_pairs(ws, split, file)
        result = judge.run(ws, pairs, **_given(shard_size=shard_size))
    console.print(result.summary(), highlight=False)


@app.command()
def distill(
    teacher: Annotated[str | None, typer.Option(
        help="Train on this teacher's labels (NAME as in `relkit label`) or a judge's (judge:NAME); omit for "
             "human labels only.")] = None,
    name: Annotated[str | None, typer.Option(help="Student name (artifacts/student-NAME); default: the teacher's.")]
        = None,
    sizes: Annotated[str | None, typer.Option(
        help="Scaling curve: students on these numbers of teacher-labeled pairs, e.g. 1000,5000,all, next to "
             "one on human labels only; each scored on the test split.")] = None,
    human_weight: Annotated[float | None, typer.Option(
        help="Weight of a human-labeled train pair against a teacher-labeled one (0: teacher labels only).")] = None,
    hidden: Annotated[str | None, typer.Option(help="Hidden layer sizes.")] = None,
    groups: Annotated[str | None, typer.Option(
        help="Feature groups, of embedding, bm25, text_match, engagement, graph (item embeddings from "
             "co-engagement: needs an engagement log with clicks), visual (item image embeddings).")] = None,
    encoder: Annotated[str | None, typer.Option(help="Bi-encoder for the embedding features: path or hub id.")]
        = None,
    graph_dim: Annotated[int | None, typer.Option(min=1, help="Width of the item graph embedding (graph group).")]
        = None,
    image_encoder: Annotated[str | None, typer.Option(
        help="Image encoder for the visual group: any transformers vision model, path or hub id.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Training setting KEY=VALUE (epochs, patience, batch_size, lr, weight_decay, dropout, seed, "
                      "product_rank: rank of the query-item-product weights, 0 for full).")]
        = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Distill the teacher's labels into a small, fast student (an MLP over cheap features)."""
    from relkit.student.distill import Distiller, parse_sizes, scaling_curve   # lazy: duckdb, scikit-learn
    from relkit.student.features import FeatureConfig
    from relkit.student.model import StudentConfig

    config = StudentConfig(**collect(StudentConfig, sets=set_, flags={   # flags win over --set
        "hidden": None if hidden is None else tuple(_csv_ints(hidden, "--hidden")), "human_weight": human_weight}))
    features = FeatureConfig(**_given(
        encoder=encoder, groups=None if groups is None else tuple(g.strip() for g in groups.split(",") if g.strip()),
        graph_dim=graph_dim, image_encoder=image_encoder))
    plan = parse_sizes(sizes) if sizes else None
    if teacher is None and plan:
        raise RelkitError("--sizes counts teacher-labeled pairs: name a --teacher")
    with _open(workspace) as ws:
        distiller = Distiller(ws, teacher, features)
        name = name or (distiller.teacher or "human").replace(":", "-")   # judge:smol -> student-judge-smol
        if plan:
            curve = scaling_curve(distiller, plan, config, prefix=name)
            if json_:
                typer.echo(json.dumps(curve.to_dicts(), indent=2))
                return
            console.print(curve)
            console.print(f"saved as artifacts/student-{name}-<size>", highlight=False)
            return
        student = distiller.train(None if teacher else 0, config, human=teacher is None or config.human_weight > 0)
        student.save(ws.artifacts / f"student-{name}")
    if json_:
        typer.echo(json.dumps(student.to_dict(), indent=2))
    else:
        console.print(student.summary(), highlight=False)


@app.command()
def promote(
    student: Annotated[str, typer.Argument(help="The student: NAME (artifacts/student-NAME), a folder name or a path.")],
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Make a student the one `relkit serve` serves; a running service switches to it without dropping requests."""
    from relkit.promotion import promote as make_active   # lazy: duckdb

    with _open(workspace) as ws:
        name = make_active(ws, student)
    console.print(f"{name} is now the active student of {workspace}", highlight=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind; beyond loopback an API key is required.")]
        = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535)] = None,
    api_key: Annotated[str | None, typer.Option(envvar="RELKIT_API_KEY",
                                                help="Require this X-API-Key header on /v1/ requests.")] = None,
    max_candidates: Annotated[int | None, typer.Option(min=1, help="Items per rerank request.")] = None,
    max_body_mb: Annotated[float | None, typer.Option(
        min=0.001, help="Largest request body, in MB (1,000,000 bytes); larger gets 413.")] = None,
    poll_seconds: Annotated[float | None, typer.Option(min=0.05, help="How often to look for a promoted student.")]
        = None,
    warm_queries: Annotated[int | None, typer.Option(
        min=0, help="Encode this many of the workspace's known queries (most engaged, then most paired) "
                    "before answering, so a restart does not start with an empty query cache; 0: none.")] = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Serve the active student over HTTP: POST /v1/rerank, POST /v1/search, /healthz, /metrics, /docs."""
    from relkit.serve import Limits, serve as run_service   # lazy: duckdb, fastapi
    from relkit.workspace import Workspace

    Workspace.open(workspace, read_only=True).close()   # a missing or foreign workspace: its error, now
    limits = Limits(**_given(max_candidates=max_candidates,   # MB as in caption
                             max_body_bytes=None if max_body_mb is None else int(max_body_mb * 1e6)))
    run_service(workspace, api_key=api_key, limits=limits,
                **_given(host=host, port=port, poll_seconds=poll_seconds, warm_queries=warm_queries))


@app.command()
def agreement(
    teacher: Annotated[str | None, typer.Option(
        help="Also compare each annotator with this teacher's level (NAME, or the name its labels carry).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """How far the annotators agree: weighted kappa per pair of annotators, Krippendorff's alpha, each
    against the consensus and the teacher, confusion matrices, judgments per hour."""
    from relkit.annotation.agreement import agreement_report   # lazy: duckdb, scikit-learn

    with _open(workspace) as ws:
        report = agreement_report(ws, teacher=teacher)
    if json_:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(report)


@app.command()
def audit(
    run: Annotated[list[str] | None, typer.Option(
        "--run", help="A system's results as a run file: NAME=FILE or FILE; TREC (qid Q0 docno rank score tag) or a "
                      "CSV/TSV/JSONL/Parquet of query_id (or query), item_id, rank (repeatable).")] = None,
    engine: Annotated[list[str] | None, typer.Option(
        "--engine", help="A live engine: NAME=URL, the URL with {query} (GET; see --items-path) or relkit's "
                         "http://HOST:PORT/v1/search (repeatable).")] = None,
    judge: Annotated[str | None, typer.Option(
        help="Who judges the results: teacher:NAME, student:NAME or judge:NAME (people's judgments in the "
             "workspace are used instead where they exist).")] = None,
    sample: Annotated[int | None, typer.Option(min=1, help="Audit this many queries, a stratified sample "
                                                           "(default: every query).")] = None,
    strata: Annotated[str, typer.Option(
        help="frequency (head/torso/tail of the engagement log) or a query column (language, or a column of the "
             "imported queries file).")] = "frequency",
    allocation: Annotated[str, typer.Option(help="proportional, or neyman (needs --pilot).")] = "proportional",
    pilot: Annotated[str | None, typer.Option(help="A stored audit whose per-stratum spread Neyman allocation "
                                                   "uses (or that --plan-mde plans from).")] = None,
    split: Annotated[str | None, typer.Option(help="Only queries of this split (default: all).")] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Results per query to judge: nDCG@K.")] = 10,
    threshold: Annotated[int | None, typer.Option(
        help="Share of results at level >= this (default: the upper half of the scale).")] = None,
    items_path: Annotated[str | None, typer.Option(
        help="Where a GET engine's reply holds the item ids, dotted, [] for each of a list: hits[].id.")] = None,
    header: Annotated[list[str] | None, typer.Option(
        help="An HTTP header for the engines, 'Name: value' (repeatable; never stored).")] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for an engine's reply.")] = 30.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Engine requests in flight at once.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the sample and the bootstrap.")] = 0,
    human: Annotated[bool, typer.Option(
        "--human/--no-human", help="Use people's judgments in the workspace where they exist (--no-human: the "
                                   "judge judges everything).")] = True,
    people: Annotated[int | None, typer.Option(
        min=1, help="Draw a random slice of the audited queries, about this many results, for people to judge "
                    "(relkit annotate serves it first; also a CSV to fill); then --combine.")] = None,
    combine: Annotated[str | None, typer.Option(
        help="Combine the stored audit NAME with people's judgments of its slice: judge only, people only and "
             "prediction-powered (PPI++) side by side, the judge's bias, whether it ranks systems as people "
             "do.")] = None,
    plan_mde: Annotated[float | None, typer.Option(
        min=0.0, help="How many queries, and how many of them judged by people, reach this MDE: from --pilot NAME, "
                      "an audit combined with people.")] = None,
    name: Annotated[str | None, typer.Option(help="Store the audit under this name (default: its time).")] = None,
    history: Annotated[bool, typer.Option("--history", help="Show the stored audits over time instead.")] = False,
    metric: Annotated[str, typer.Option(help="With --history: ndcg, share or difference.")] = "ndcg",
    system: Annotated[str | None, typer.Option(help="With --history: only this system.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the audit as JSON.")] = False,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Judge what search engines return for a sample of queries: nDCG@K and share relevant, with intervals."""
    from relkit.audit import Engine, audit as run_audit, history as audit_history   # lazy: duckdb, numpy
    from relkit.audit.lists import parse_headers, parse_named

    if history:
        with _open(workspace) as ws:
            past = audit_history(ws, metric, system)
        if json_:
            typer.echo(json.dumps(past.rows, indent=2))
        else:
            console.print(past)
        return
    if combine or plan_mde is not None:
        from relkit.audit import combine as combine_slice, plan_audit

        with _open(workspace) as ws:
            done = plan_audit(ws, pilot, plan_mde) if plan_mde is not None else combine_slice(ws, combine)
        if json_:
            typer.echo(json.dumps(done.to_dict(), indent=2))
        else:
            console.print(done)
        return
    engines = [Engine(n, url, items_path, parse_headers(header or []), timeout)
               for n, url in (parse_named(e, "engine") for e in engine or [])]
    with _open(workspace) as ws:
        result = run_audit(ws, judge, runs=run or [], engines=engines, sample=sample, strata=strata,
                           allocation=allocation, pilot=pilot, split=split, k=k, threshold=threshold, seed=seed,
                           name=name, concurrency=concurrency, human=human, people=people)
    if json_:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    console.print(result)
    console.print(f"stored as {result.name} (`relkit audit --history`)", highlight=False)


@app.command()
def annotate(
    host: Annotated[str, typer.Option(
        help="Address to bind; beyond loopback annotators sign in with a token (--add-annotator).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8001,
    guidelines: Annotated[Path | None, typer.Option(
        help="Markdown file shown next to every pair (kept in the workspace for the next runs).")] = None,
    overlap: Annotated[float, typer.Option(min=0.0, max=1.0,
                                           help="Share of pairs also sent to a second annotator, for agreement.")] = 0.2,
    resolve: Annotated[str, typer.Option(
        help="Label of a pair two annotators judged: median, majority, or review (left out of judgments "
             "until they agree).")] = "median",
    goal: Annotated[int, typer.Option(min=1, help="Judgments per annotator the progress bar counts toward.")] = 100,
    queue: Annotated[str, typer.Option(
        help="Queue strategies and their weights, e.g. uncertain=0.6,diverse=0.4 "
             "(uncertain, disagree, diverse, cold).")] = "cold=1",
    model: Annotated[str | None, typer.Option(help="Teacher or student the queue asks (teacher:NAME, student:NAME).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the queue's order and of which pairs overlap.")] = 0,
    add_annotator: Annotated[str | None, typer.Option(
        "--add-annotator", help="Register an annotator (or give one a new token), print the token once, and exit.")] = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Judge pairs in a browser: one pair at a time, keys 1..K, s skip, u undo, ? help."""
    from relkit.annotation.app import AppConfig, prepare, serve as run_app   # lazy: fastapi
    from relkit.annotation.auth import is_loopback
    from relkit.annotation.queue import parse_weights   # lazy: duckdb
    from relkit.annotation.store import JOURNAL_NAME, Journal
    from relkit.workspace import Workspace

    Workspace.open(workspace, read_only=True).close()   # a missing or foreign workspace: its error, now
    if add_annotator is not None:
        with contextlib.closing(Journal(workspace / JOURNAL_NAME)) as journal:
            token = journal.add_annotator(add_annotator)
        console.print(f"annotator {add_annotator}: token {token}\n(shown once; relkit keeps only its hash)",
                      highlight=False)
        return
    text = None
    if guidelines is not None:
        try:
            text = guidelines.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RelkitError(f"--guidelines {guidelines}: cannot read it as UTF-8 text ({e})") from None
    try:
        weights = parse_weights(queue)
    except RelkitError as e:
        raise RelkitError(f"--queue {queue!r}: {e}") from None
    config = AppConfig(overlap=overlap, resolve=resolve, goal=goal, guidelines=text, weights=weights,
                       model=model, seed=seed, require_tokens=not is_loopback(host))
    prepared = prepare(workspace, config)    # a workspace without pairs, a wrong option: its error, now
    err.print(f"relkit: annotating {len(prepared.campaign.pairs):,} pairs of {workspace} on http://{host}:{port}",
              highlight=False, soft_wrap=True)
    run_app(workspace, config, host=host, port=port, prepared=prepared)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
