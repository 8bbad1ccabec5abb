"""What the annotation app holds while it runs: its options, what it read from the workspace when it
started (the journal, the campaign, the scale, the guidelines), the signer of its cookies, and the
merger that brings the journal into the workspace every few seconds."""
from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from relkit.annotation import store
from relkit.annotation.auth import Signer
from relkit.annotation.campaign import Campaign
from relkit.annotation.views import environment, guidelines_html
from relkit.errors import RelkitError

logger = logging.getLogger(__name__)
GUIDELINES_META = "annotation_guidelines"


@dataclass
class AppConfig:
    """How a labeling campaign runs (the options of `relkit annotate`)."""

    overlap: float = 0.2               # share of pairs two annotators judge
    resolve: str = "median"            # median | majority | review: the label of a pair judged twice
    goal: int = 100                    # judgments per annotator the progress bar counts toward
    guidelines: str | None = None      # markdown; None: the workspace's (the last ones given)
    weights: dict[str, float] = field(default_factory=lambda: {"cold": 1.0})   # queue strategies
    model: str | None = None           # the teacher or student the queue asks
    seed: int = 0
    require_tokens: bool = False       # beyond loopback: sign in with a token, not a name
    merge_seconds: float = 2.0         # how often the journal is merged into the workspace


@dataclass
class Prepared:
    """What the app reads from the workspace when it starts."""

    journal: store.Journal
    campaign: Campaign
    scale: object
    guidelines: str | None


def prepare(path: Path, config: AppConfig) -> Prepared:
    """Merge the journal, keep the rule and guidelines in the workspace, and read the queue's pairs;
    the workspace is closed again before the app answers."""
    from relkit.workspace import Workspace

    store.resolve([1], config.resolve)
    journal = store.Journal(path / store.JOURNAL_NAME)
    try:
        if config.require_tokens and not journal.annotators():
            raise RelkitError(f"beyond loopback annotators sign in with a token, and {path} has none yet: "
                              f"add one with `relkit annotate --add-annotator NAME -w {path}`")
        with Workspace.open(path) as ws:
            store.set_rule(ws, journal, config.resolve)
            if config.guidelines is not None:
                ws.set_meta(GUIDELINES_META, config.guidelines)
            campaign = Campaign.load(ws, journal, config.weights, config.model, config.overlap, config.seed)
            return Prepared(journal, campaign, ws.scale, ws.get_meta(GUIDELINES_META))
    except BaseException:
        journal.close()
        raise


class Merger:
    """Merges the journal into the workspace in short write sessions, retrying while it is busy."""

    def __init__(self, path: Path, journal: store.Journal, every: float):
        self.path, self.journal, self.every = path, journal, every
        self.merged = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="relkit-annotation-merge", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.merge_now(wait=5.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            if self.journal.last_seq() > self.merged:
                self.merge_now(wait=0.2)

    def merge_now(self, wait: float) -> bool:
        """One merge, waiting up to `wait` seconds for the workspace; False if it stayed busy."""
        from relkit.workspace import DB_NAME, Workspace, connect

        with self._lock:
            last = self.journal.last_seq()
            try:
                con = connect(self.path / DB_NAME, wait=wait)
            except RelkitError:
                return False
            ws = Workspace(path=self.path, scale=None, _con=con)
            try:
                store._merge(ws, self.journal)
                self.merged = last
                return True
            except Exception:   # noqa: BLE001 - the journal keeps everything; the next round tries again
                logger.exception("merging the annotation journal into %s failed; retrying later", self.path)
                return False
            finally:
                ws.close()


class Annotation:
    """The running app's state (`app.state.annotation`): its workspace, options and templates from
    the start, and, once `lifespan` has read them, the journal, campaign, scale, guidelines (HTML),
    cookie signer and merger."""

    def __init__(self, path: Path, config: AppConfig, prepared: Prepared | None = None):
        self.path, self.config, self._prepared = path, config, prepared
        self.templates = environment()
        self.journal: store.Journal | None = None
        self.campaign: Campaign | None = None
        self.scale = None
        self.guidelines = ""
        self.signer: Signer | None = None
        self.merger: Merger | None = None

    @asynccontextmanager
    async def lifespan(self, app):
        """Read the workspace (unless `prepared` was given), answer, and on the way out merge what
        is left of the journal and close it."""
        loaded = self._prepared or prepare(self.path, self.config)
        self.journal, self.campaign, self.scale = loaded.journal, loaded.campaign, loaded.scale
        self.guidelines = guidelines_html(loaded.guidelines)
        self.signer = Signer(loaded.journal.setting("secret"))
        self.merger = Merger(self.path, loaded.journal, self.config.merge_seconds)
        self.merger.merged = loaded.journal.last_seq()
        self.merger.start()
        logger.debug("annotating %d pairs of %s", len(loaded.campaign.pairs), self.path)
        try:
            yield
        finally:
            self.merger.stop()
            loaded.journal.close()
