"""Commands that train the teacher, build item text and have the teacher label pairs: teach, ablate,
caption, engaged, pairs, label."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from relkit.cli.app import DEFAULT_WS, WorkspaceOpt, _given, _open, app, console
from relkit.config import collect
from relkit.errors import RelkitError


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
    refit_prior: Annotated[str | None, typer.Option(
        help="Fit the prior of the teacher NAME (trained with prior_fit=after) again on its saved cross-encoder, "
             "with the prior settings --set gives (prior, prior_features, tokenization, stack_on): minutes, "
             "no training.")] = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Fine-tune a cross-encoder teacher on the train split, keeping the best weights on dev."""
    from relkit.teacher.train import TrainConfig, train_teacher  # lazy: duckdb, scikit-learn

    options = collect(TrainConfig, config, set_, what="training option", flags=dict(
        model=model, name=name, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
        class_weights=class_weights, primary=primary, lora=lora, fields=fields, labels=labels))
    if resume is not None and options:
        raise RelkitError("--resume continues with the teacher's saved options; give no other training options")
    if refit_prior is not None:
        if resume is not None or stop_after is not None:
            raise RelkitError("--refit-prior trains nothing: give neither --resume nor --stop-after")
        _refit(workspace, refit_prior, options)
        return
    _open(workspace).close()   # people's judgments from `relkit annotate` into judgments first
    # the workspace is opened by the run while it reads its data: under `accelerate launch`, by
    # each process in turn
    result = train_teacher(workspace, None if resume else TrainConfig(**options), resume=resume,
                           stop_after=stop_after)
    if result.finished and result.main_process:
        shown = {k: round(v, 4) for k, v in result.dev_metrics.items() if isinstance(v, float)}
        console.print(f"saved {result.path} (step {result.best_step} of {result.steps}, "
                      f"{result.seconds / 60:.1f} min); dev: {shown}", highlight=False)


def _refit(workspace: Path, name: str, options: dict) -> None:
    from relkit.teacher.model import META_FILE
    from relkit.teacher.train import refit_prior, teacher_dir

    device = options.pop("device", "auto")
    refit_prior(workspace, name, device=device, **options)
    path = teacher_dir(workspace, name)
    metrics = json.loads((path / META_FILE).read_text())["metrics"]
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    console.print(f"saved {path} (its prior fit again); dev: {shown}", highlight=False)


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
    from relkit.ablation import ablate as run_ablation  # lazy: duckdb, scikit-learn
    from relkit.ablation import ablation_table, rows_as_dicts
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
    from relkit.captions import caption_items  # lazy: duckdb

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
    from relkit.features.engagement import EngagedQueriesConfig, refresh_engaged_queries  # lazy: duckdb

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
    encoder: Annotated[str | None, typer.Option(
        help="Bi-encoder for the embedding source: a name, path or hub id (default: the workspace's).")] = None,
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
    from relkit.candidates import SOURCES, make_pairs  # lazy: duckdb

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
    engine: Annotated[str | None, typer.Option(help="local (this process) or ray (a pool of Ray actors, the same output).")]
        = None,
    ray_address: Annotated[str | None, typer.Option(help="A Ray cluster to join (default: start a local Ray).")] = None,
    ray_actors: Annotated[int | None, typer.Option(min=1, help="Scoring actors in the Ray pool.")] = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Label the pairs table with a teacher's soft labels; a rerun labels only what is missing."""
    from relkit.labeling import label_pairs  # lazy: duckdb

    with _open(workspace) as ws:
        result = label_pairs(ws, teacher, ray_address=ray_address, **_given(
            shard_size=shard_size, batch_size=batch_size, backend=backend, engine=engine, ray_actors=ray_actors))
    console.print(result.summary(), highlight=False)
