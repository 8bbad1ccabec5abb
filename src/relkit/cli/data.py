"""Commands that bring data in and show it: init (and the workspace's encoder), import, split, status."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from relkit.cli.app import DEFAULT_WS, WorkspaceOpt, _busy, _csv_ints, _given, _open, app, console
from relkit.errors import RelkitError


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Directory to create the workspace in.")],
    levels: Annotated[int | None, typer.Option(
        help="Number of relevance levels K, numbered 1..K (or as many as --names).")] = None,
    names: Annotated[str | None, typer.Option(help="Level names from 1 to K, comma-separated.")] = None,
    gains: Annotated[str | None, typer.Option(
        help="nDCG gain of each level from 1 to K, comma-separated non-negative integers (default 0..K-1).")] = None,
    encoder: Annotated[str | None, typer.Option(
        help="The bi-encoder every stage uses: default (all-MiniLM-L6-v2, English), multilingual-e5-small, a model "
             "folder or a hub id. Given alone for an existing workspace, changes its encoder.")] = None,
) -> None:
    """Create a workspace: a DuckDB database and an artifacts/ folder, with its label scale and bi-encoder."""
    from relkit.features.embeddings import encoder_name, encoder_spec  # lazy: numpy
    from relkit.scale import LabelScale
    from relkit.workspace import DB_NAME, Workspace  # lazy: duckdb

    if (directory / DB_NAME).exists() and encoder is not None:
        if levels is not None or names is not None or gains is not None:
            raise RelkitError(f"{directory} already holds a relkit workspace, whose scale stays as it is: give "
                              "--encoder alone to change its encoder")
        _change_encoder(directory, encoder)
        return
    name_list = tuple(n.strip() for n in names.split(",")) if names else None
    k = levels or (len(name_list) if name_list else None)
    if name_list and len(name_list) != k:
        raise RelkitError(f"--levels {k} but --names gives {len(name_list)} names")
    default = LabelScale.default(**_given(k=k))
    scale = LabelScale(names=name_list or default.names,
                       gains=tuple(_csv_ints(gains, "--gains")) if gains else default.gains)
    if encoder is not None:
        encoder = encoder_name(encoder)
        encoder_spec(encoder)   # a folder's relkit-encoder.json is read now: a broken one is refused
    with Workspace.create(directory, scale, encoder=encoder) as ws:
        console.print(f"created workspace {ws.path} with {ws.scale.k} levels: {ws.scale.describe()}"
                      + (f"; encoder {encoder}" if encoder else ""))


def _change_encoder(directory: Path, encoder: str) -> None:
    """`relkit init DIR --encoder NAME` on an existing workspace: set it, and say what must be made again."""
    from relkit.features.embeddings import set_workspace_encoder  # lazy: numpy
    from relkit.workspace import active_student

    with _open(directory) as ws:
        old, new = set_workspace_encoder(ws, encoder)
        if old == new:
            console.print(f"the encoder of {ws.path} is already {new}")
            return
        stale = []
        for model in ws.models():
            if model["kind"] == "student":
                features = json.loads((Path(model["path"]) / "relkit.json").read_text()).get("features") or {}
                if "embedding" in features.get("groups", ()) and features.get("encoder") != new:
                    stale.append(model["id"])
        active = active_student(ws.path)
    console.print(f"the encoder of {ws.path} is now {new} (was {old}); its vectors are computed when first needed",
                  highlight=False)
    if stale:
        console.print(f"made on another encoder, refused until distilled again (`relkit distill`): {', '.join(stale)}"
                      + (f"; the served student {active['student']} too, then `relkit promote` one made on {new}"
                         if active and active["student"] in stale else ""), highlight=False)


@app.command(name="import")
def import_(
    kind: Annotated[str, typer.Argument(help="What the file holds: items, queries, judgments, pairs or engagement.")],
    file: Annotated[Path, typer.Argument(help="A CSV, JSONL or Parquet file (CSV/JSONL may be gzipped).")],
    format: Annotated[str | None, typer.Option(
        "--format", help="Read a known dataset as published: homedepot, crowdflower, xquad-r or multicpr.")] = None,
    map: Annotated[list[str] | None, typer.Option(
        "--map", help="Rename a column: SOURCE=FIELD (repeatable), e.g. --map qid=query_id.")] = None,
    encoding: Annotated[str | None, typer.Option(help="Text encoding of CSV/JSONL files (default utf-8).")] = None,
    split: Annotated[str | None, typer.Option(
        help="Pin every query of the file to this split (train, dev or test), e.g. your fixed test set.")] = None,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Import a file into the workspace, all or nothing; importing the same data again changes nothing."""
    from relkit.data.importer import import_file  # lazy: duckdb, pyarrow

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
    from relkit.data.splits import SplitConfig, pin_from_file, split_queries  # lazy: duckdb

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
