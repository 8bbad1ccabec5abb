"""Commands that score systems on judged queries: eval, report."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from relkit.cli.app import DEFAULT_WS, WorkspaceOpt, _given, _open, app, console
from relkit.errors import RelkitError


@app.command(name="eval")
def eval_(
    system: Annotated[list[str], typer.Option(
        "--system", "-s", help="A system to score: bm25, embedding[:MODEL], teacher:NAME, student:NAME or judge:NAME "
                               "(repeatable).")],
    split: Annotated[str | None, typer.Option(help="Split to evaluate on.")] = None,
    by: Annotated[str | None, typer.Option(
        "--by", help="Also score each group of queries apart, each against the first system: language (the "
                     "queries' language).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    workspace: WorkspaceOpt = DEFAULT_WS,
) -> None:
    """Score systems on the same judged queries and print them side by side."""
    from relkit.evaluate import check_by, evaluate  # lazy: duckdb, scikit-learn
    from relkit.systems import make_system  # lazy: duckdb

    check_by(by)  # before any system loads its model
    with _open(workspace) as ws:
        report = evaluate(ws, [make_system(s, ws) for s in system], **_given(split=split, by=by))
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
    from relkit.report import build, write  # lazy: duckdb, scikit-learn
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
