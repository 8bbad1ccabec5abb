"""The `relkit` command. Each command parses its options and calls the library; the commands live
in modules by what they work on (data, teacher, judging, student, evaluation, people), registered
on one Typer app in the order `relkit --help` lists them."""
from __future__ import annotations

import os

from relkit.cli import data, evaluation, judging, people, student, teacher  # noqa: F401  (registers the commands)
from relkit.cli.app import app, console, err, library_defaults

__all__ = ["app", "console", "err", "library_defaults", "main"]


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
