"""relkit's one logging convention, and the progress bars that follow it.

Every module says what it does through its own logger (`logging.getLogger(__name__)`) and never
prints; results are returned, and the CLI prints them on stdout. Progress bars follow the level of
the `relkit` logger: they show when it is enabled for INFO and stderr is a terminal. So a Python
user sees nothing until they configure logging, and gets messages and bars with

    import logging
    logging.basicConfig(level=logging.INFO)

The `relkit` command installs one rich handler on stderr (`install`): INFO by default, WARNING
under `--quiet` (no messages, no bars), DEBUG under `--verbose`.
"""
from __future__ import annotations

import logging
import sys
from typing import Callable, Iterable

ROOT = "relkit"
_HANDLER_NAME = "relkit-cli"


def bars_on() -> bool:
    """Whether progress bars show now: the `relkit` logger takes INFO and stderr is a terminal (a
    bar redrawn into a log file or a pipe is noise)."""
    if not logging.getLogger(ROOT).isEnabledFor(logging.INFO):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:   # a closed stream
        return False


def progress(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs):
    """A tqdm bar over `iterable` (or one updated by hand, given `total=`), shown only when
    `bars_on()` and `enabled` (e.g. on the main process only); the keywords are tqdm's."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not (enabled and bars_on()), **kwargs)


def install(level: int, console=None) -> Callable[[], None]:
    """Send relkit's messages at `level` and up, and every other library's warnings, to one
    rich.logging.RichHandler on stderr (`console`, a rich Console writing to stderr). Messages read
    as plain lines, as relkit printed them; under DEBUG each also names its level and logger.
    Returns the function that undoes it (the handler removed, the level restored)."""
    from rich.console import Console
    from rich.highlighter import NullHighlighter
    from rich.logging import RichHandler

    root, ours = logging.getLogger(), logging.getLogger(ROOT)
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)

    class Handler(RichHandler):
        def render(self, *, record, traceback, message_renderable):
            if plain and traceback is None:   # the bare message, not a row of columns padded to the width
                return message_renderable
            return super().render(record=record, traceback=traceback, message_renderable=message_renderable)

    debug = level <= logging.DEBUG
    plain = not debug
    handler = Handler(console=console or Console(stderr=True, emoji=False), show_time=False, show_path=False,
                      show_level=debug, markup=False, highlighter=NullHighlighter(), keywords=[],
                      rich_tracebacks=False)
    handler.set_name(_HANDLER_NAME)
    # other libraries: their warnings and errors only, as Python says them without a handler (some,
    # such as bm25s, set their own loggers to DEBUG)
    handler.addFilter(lambda record: record.levelno >= logging.WARNING or record.name == ROOT
                      or record.name.startswith(ROOT + "."))
    if debug:
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    before = ours.level
    root.addHandler(handler)
    ours.setLevel(level)

    def undo() -> None:
        root.removeHandler(handler)
        ours.setLevel(before)
    return undo


def main_process_only(is_main: bool) -> None:
    """In the other processes of a multi-process run (`accelerate launch`), keep relkit to warnings
    and errors: one process says what the run does and draws its bars."""
    if not is_main:
        ours = logging.getLogger(ROOT)
        ours.setLevel(max(ours.getEffectiveLevel(), logging.WARNING))
