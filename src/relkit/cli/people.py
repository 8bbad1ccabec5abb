"""Commands around people's judgments: agreement, audit, annotate."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer

from relkit.cli.app import DEFAULT_WS, WorkspaceOpt, _open, app, console, err
from relkit.errors import RelkitError


@app.command()
def agreement(
    teacher: Annotated[str | None, typer.Option(
        help="Also compare each annotator with this teacher's level (NAME, or the name its labels carry).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """How far the annotators agree: weighted kappa per pair of annotators, Krippendorff's alpha, each
    against the consensus and the teacher, confusion matrices, judgments per hour."""
    from relkit.annotation.agreement import agreement_report  # lazy: duckdb, scikit-learn

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
    from relkit.audit import Engine  # lazy: duckdb, numpy
    from relkit.audit import audit as run_audit
    from relkit.audit import history as audit_history
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
        from relkit.audit import combine as combine_slice
        from relkit.audit import plan_audit

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
    from relkit.annotation.app import AppConfig, prepare  # lazy: fastapi
    from relkit.annotation.app import serve as run_app
    from relkit.annotation.auth import is_loopback
    from relkit.annotation.queue import parse_weights  # lazy: duckdb
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
