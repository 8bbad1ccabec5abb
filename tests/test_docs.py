"""The documentation: the site builds with `mkdocs build --strict`, every `relkit` command line in
the README's and the site's code blocks parses with relkit's own command-line app, and the README
stays a short front door."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from relkit.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console", "zsh"}   # code blocks read as command lines
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PREFIXES = {"nice", "time", "exec", "command"}                  # words that may stand before a command
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$")                     # COMMAND, NAME: not a real subcommand


@dataclass(frozen=True)
class CommandLine:
    file: Path
    line: int            # where the command starts (continuations joined)
    args: tuple[str, ...]  # what follows `relkit`

    def __str__(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}: relkit {shlex.join(self.args)}"


def strip_comment(line: str) -> str:
    """`line` without its shell comment: a `#` that starts a word outside quotes (as bash reads it;
    shlex would also cut at a `#` inside a word)."""
    quote = None
    escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def shell_lines(text: str) -> list[tuple[int, str]]:
    """The logical lines (continuations with a trailing backslash joined) of the shell code blocks
    of a markdown text, each with the number of its first line."""
    out: list[tuple[int, str]] = []
    fence = None
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        match = FENCE.match(raw)
        if fence is None:
            if match:
                fence = (match.group(2), match.group(3).lower() in SHELL_BLOCKS)
            continue
        if match and match.group(2).startswith(fence[0]) and not match.group(3):
            fence = None
            pending = None
            continue
        if not fence[1]:
            continue
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        start, joined = pending if pending else (number, "")
        joined = f"{joined} {line}" if joined else line
        if joined.endswith("\\"):
            pending = (start, joined[:-1].rstrip())
            continue
        pending = None
        out.append((start, joined))
    return out


def relkit_commands(path: Path) -> list[CommandLine]:
    """Every `relkit ...` command in the shell code blocks of a markdown file, also `python -m relkit`
    and `accelerate launch ... -m relkit`, several on one line when joined by `&&`, `;` or `|`.
    Placeholders: `[...]` marks an optional part, kept (without its brackets); `...` is dropped."""
    commands = []
    for number, line in shell_lines(path.read_text(encoding="utf-8")):
        lexer = shlex.shlex(strip_comment(line), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = ""
        segment: list[str] = []
        segments = [segment]
        for token in lexer:
            if token and set(token) <= set("();<>|&"):
                segment = []
                segments.append(segment)
            else:
                segment.append(token)
        for tokens in segments:
            while tokens and (ASSIGNMENT.match(tokens[0]) or tokens[0] in PREFIXES):
                tokens = tokens[1:]
            if not tokens:
                continue
            if tokens[0] == "relkit" or tokens[0].endswith("/relkit"):
                args = tokens[1:]
            elif "-m" in tokens and tokens.index("-m") + 1 < len(tokens) and tokens[tokens.index("-m") + 1] == "relkit":
                args = tokens[tokens.index("-m") + 2:]
            else:
                continue
            args = [unwrap(a) for a in args if a != "..."]
            commands.append(CommandLine(path, number, tuple(a for a in args if a)))
    return commands


def unwrap(token: str) -> str:
    """An optional part's token without the brackets that mark it (`[--json]` -> `--json`); a
    bracket inside a token (`hits[].id`) stays."""
    if token.startswith("["):
        token = token[1:]
    if token.endswith("]") and "[" not in token:
        token = token[:-1]
    return token


def parse_error(args: tuple[str, ...]) -> str | None:
    """Why relkit's command-line app would refuse `relkit ARGS` (None if it parses). The group's
    and the subcommand's options are parsed and converted as when run, and nothing is invoked."""
    group = typer.main.get_command(app)
    valued = {name for param in group.params if not getattr(param, "is_flag", True) for name in param.opts}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in valued else 1
    if i == len(args):
        return "no command"
    try:
        ctx = group.make_context("relkit", list(args), resilient_parsing=False)
        name, command, rest = group.resolve_command(ctx, list(args[i:]))
        command.make_context(name, rest, parent=ctx, resilient_parsing=False)
    except typer.Exit as e:                  # --help: it parsed
        return None if e.exit_code == 0 else f"exit {e.exit_code}"
    except typer.TyperException as e:        # typer's click: usage errors, bad values, missing options
        return e.format_message()
    return None


def command_name(args: tuple[str, ...]) -> str | None:
    """The subcommand of `relkit ARGS`: its first word that is not an option (the group's options
    are flags)."""
    return next((a for a in args if not a.startswith("-")), None)


def documented_commands() -> list[CommandLine]:
    """The command lines of README.md and docs/, less those whose command is a placeholder
    (`relkit COMMAND --help`)."""
    files = [README, *sorted(DOCS.rglob("*.md"))]
    return [c for path in files for c in relkit_commands(path)
            if not PLACEHOLDER.match(command_name(c.args) or "")]


def test_every_documented_command_parses():
    commands = documented_commands()
    errors = [(c, parse_error(c.args)) for c in commands]
    failures = [f"{c}\n    {error}" for c, error in errors if error is not None]
    assert not failures, f"{len(failures)} documented command lines do not parse:\n" + "\n".join(failures)
    # every command has at least one example in a code block
    documented = {command_name(c.args) for c in commands}
    missing = set(typer.main.get_command(app).commands) - documented
    assert not missing, f"commands with no example in README.md or docs/: {sorted(missing)}"


def test_the_checker_finds_commands_and_refuses_what_relkit_refuses(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nrelkit eval --no-such-flag\n```\n"           # not a shell block: not read
        "Text `relkit teach --bogus` in prose is not read.\n"
        "```bash\n"
        "# relkit status -w in-a-comment\n"
        "RELKIT_LOCK_WAIT=5 relkit status -w ws  # relkit ignored --here\n"
        "relkit eval --system bm25 \\\n    --split dev [--json] -w ws && relkit promote demo -w ws\n"
        "python -m relkit --quiet pairs --k 0 -w ws\n"
        "relkit audit --engine prod='https://e.example/?q={query}#top' --items-path hits[].id -w ws\n"
        "relkit serve --port 70000 ...\n"
        "relkit label -w ws\n"
        "```\n", encoding="utf-8")
    found = relkit_commands(page)
    assert [(c.line, c.args) for c in found] == [
        (7, ("status", "-w", "ws")),
        (8, ("eval", "--system", "bm25", "--split", "dev", "--json", "-w", "ws")),
        (8, ("promote", "demo", "-w", "ws")),
        (10, ("--quiet", "pairs", "--k", "0", "-w", "ws")),
        (11, ("audit", "--engine", "prod=https://e.example/?q={query}#top", "--items-path", "hits[].id", "-w", "ws")),
        (12, ("serve", "--port", "70000")),
        (13, ("label", "-w", "ws")),
    ]
    errors = [parse_error(c.args) for c in found]
    assert errors[:3] == [None, None, None] and errors[4] is None
    assert errors[3].startswith("Invalid value for '--k'")       # 0, below its minimum of 1
    assert errors[5].startswith("Invalid value for '--port'")    # 70000, above 65535
    assert errors[6] == "Missing option '--teacher'."
    assert parse_error(("tach", "-w", "ws")).startswith("No such command 'tach'")
    assert parse_error(("--quiet",)) == "no command"
    assert "No such option" in parse_error(("eval", "--system", "bm25", "--bogus"))
    assert "No such option" in parse_error(("--loud", "status"))


README_LINK = re.compile(r"\]\((docs/[^)#\s]+\.md)(?:#([\w-]+))?\)")


def test_readme_is_a_short_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 300, f"README.md has {len(lines)} lines: move the details into docs/"
    text = "\n".join(lines)
    assert "make demo" in text and "make test" in text
    links = README_LINK.findall(text)
    assert {page for page, _ in links} >= {"docs/getting-started.md", "docs/concepts.md", "docs/results.md",
                                           "docs/api.md"}
    assert not [page for page, _ in links if not (ROOT / page).is_file()]


def test_api_page_lists_every_export_with_its_module():
    import importlib

    import relkit

    page = (DOCS / "api.md").read_text(encoding="utf-8")
    rows = {name: cells[2] for line in page.splitlines() if line.startswith("| `")
            for cells in [line.split("|")] for name in re.findall(r"`(\w+)`", cells[1])}
    assert set(rows) == set(relkit.__all__) - {"__version__"}
    for name, cell in rows.items():
        module = re.search(r"`(relkit[\w.]*)`", cell).group(1)
        assert hasattr(importlib.import_module(module), name), f"docs/api.md: {name} is not in {module}"


def test_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(site)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    nav = re.findall(r"^\s*- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
    assert sorted(nav) == sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for anchor in ("relkit.workspace", "relkit.scale", "relkit.metrics", "relkit.evaluate", "relkit.errors",
                   "relkit.serve", "relkit.workspace.Workspace", "relkit.scale.LabelScale", "relkit.evaluate.evaluate",
                   "relkit.serve.create_app"):
        assert f'id="{anchor}"' in api, f"the API page lacks {anchor}"
    # the README's links into the site land on headings that exist
    for page, anchor in README_LINK.findall(README.read_text(encoding="utf-8")):
        html = site / Path(page).relative_to("docs").with_suffix("") / "index.html"
        if page == "docs/index.md":
            html = site / "index.html"
        assert not anchor or f'id="{anchor}"' in html.read_text(encoding="utf-8"), f"README.md: {page}#{anchor}"
    results = (site / "results" / "index.html").read_text(encoding="utf-8")
    assert "--8&lt;--" not in results and "--8<--" not in results       # the result files were included
