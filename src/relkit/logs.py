"""relkit's one logging convention, and the progress bars that follow it.

Every module says what it does through its own logger (`logging.getLogger(__name__)`) and never
prints; results are returned, and the CLI prints them on stdout. Progress bars follow the level of
the `relkit` logger: they show when it is enabled for INFO and stderr is a terminal; when stderr is
a file or a pipe, long work says instead one line of progress a minute (`LOG_EVERY`), so a log of a
run in the background shows how far it got. A Python user sees nothing until they configure
logging, and gets messages and bars with

    import logging
    logging.basicConfig(level=logging.INFO)

The `relkit` command installs one rich handler on stderr (`install`): INFO by default, WARNING
under `--quiet` (no messages, no bars), DEBUG under `--verbose`.
"""
from __future__ import annotations

import functools
import logging
import sys
from typing import Callable, Iterable

ROOT = "relkit"
_HANDLER_NAME = "relkit-cli"
LOG_EVERY = 60.0   # seconds between progress lines where a bar cannot show (stderr not a terminal)


def bars_on() -> bool:
    """Whether progress bars show now: the `relkit` logger takes INFO and stderr is a terminal (a
    bar redrawn into a log file or a pipe is noise)."""
    return logging.getLogger(ROOT).isEnabledFor(logging.INFO) and _on_terminal()


def _on_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:   # a closed stream
        return False


def progress(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs):
    """A tqdm bar over `iterable` (or one updated by hand, given `total=`), shown only when
    `bars_on()` and `enabled` (e.g. on the main process only); the keywords are tqdm's. Where the
    `relkit` logger takes INFO but stderr is no terminal, the same object logs a line of progress
    every `LOG_EVERY` seconds instead of drawing. tqdm's own switch, `TQDM_DISABLE=1` in the
    environment, turns off both."""
    from tqdm.auto import tqdm

    if enabled and not kwargs.get("disable") and logging.getLogger(ROOT).isEnabledFor(logging.INFO) \
            and not _on_terminal():
        return _progress_lines()(iterable, **kwargs)
    return tqdm(iterable, disable=not (enabled and bars_on()), **kwargs)


@functools.cache
def _progress_lines():
    """The tqdm subclass behind `progress` off a terminal (made once, as tqdm is imported lazily)."""
    from tqdm import tqdm

    class Lines(tqdm):
        """tqdm that logs its line every LOG_EVERY seconds instead of redrawing a bar."""

        def __init__(self, *args, **kwargs):
            kwargs.update(file=_Discard(), mininterval=LOG_EVERY, maxinterval=max(LOG_EVERY, 10.0), miniters=1,
                          dynamic_ncols=False, ncols=None, leave=True)
            self._said_at, self._said_n, self._closing = None, 0, False
            super().__init__(*args, **kwargs)
            if not self.disable:   # tqdm turned off (TQDM_DISABLE) returns from __init__ before its clock is set
                self._said_at = self._time()   # the first line comes LOG_EVERY after the start

        def display(self, msg=None, pos=None):
            if self._said_at is None or self.n == self._said_n:
                return True
            now = self._time()
            # a line every LOG_EVERY; at the end only from a run that said where it was
            if (self._closing and self._said_n) or (not self._closing and now - self._said_at >= LOG_EVERY):
                self._said_at, self._said_n = now, self.n
                bar = ("{desc}{n_fmt}/{total_fmt} ({percentage:.0f}%), {elapsed} so far, {remaining} to go, "
                       "{rate_fmt}{postfix}" if self.total else "{desc}{n_fmt}, {elapsed} so far, {rate_fmt}{postfix}")
                meter = self.format_dict | {"bar_format": bar}
                desc = meter.get("prefix") or ""
                meter["prefix"] = f"{desc}: " if desc and not desc.endswith(": ") else desc
                logging.getLogger(f"{ROOT}.progress").info(self.format_meter(**meter))
            return True

        def close(self):
            self._closing = True
            super().close()

    return Lines


class _Discard:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


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
