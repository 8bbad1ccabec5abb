"""What the service serves, and how that changes: the loaded model, swapped by one assignment when
a student is promoted; the query cache, warmed while the service answers; the lifespan that loads
both and then follows the workspace's `active-student` file."""
from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from relkit.errors import RelkitError
from relkit.promotion import ACTIVE_FILE, active_student
from relkit.serve.metrics import Metrics
from relkit.serve.queries import QueryVectors
from relkit.student.snapshot import WorkspaceBusy, read_features

if TYPE_CHECKING:
    from relkit.student.fast import FastScorer
    from relkit.student.features import FeatureBuilder

WARM_QUERIES = 2000    # known queries encoded into the cache once the service answers (snapshot.known_queries)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Model:
    """One servable version: the student, its features and indexes. Immutable once built."""

    version: str
    scorer: FastScorer
    builder: FeatureBuilder
    ann: object | None          # usearch Index over the item vectors, or None without them
    names: tuple[str, ...]      # the scale's level names
    known: tuple[str, ...] = ()  # the workspace's known queries when its features were read, likeliest first


def load_model(workspace: Path, record: dict, reuse: Model | None = None, known: int = 0) -> Model:
    """Build a Model for the student in `record`, with up to `known` of the workspace's known
    queries; the features and indexes of `reuse` are kept when the new student uses the same
    feature config. The features are read from the workspace in a process of its own
    (relkit.student.snapshot): this one never loads DuckDB."""
    from relkit.features.onnx_encoder import service_encoder
    from relkit.student.fast import FastScorer
    from relkit.student.model import Student

    import_bm25s_without_numba()
    path = Path(record["path"])
    if not path.is_dir():
        path = Path(workspace) / "artifacts" / record["student"]
    student = Student.load(path)
    config = student.feature_config()
    if reuse is not None and reuse.builder.config == config:
        builder, ann, queries = reuse.builder, reuse.ann, reuse.known
    else:
        builder, queries = read_features(Path(workspace), config, path.name, known)
        # the ONNX export (no torch in the process); None, when the workspace has none: torch, said in the log
        if "embedding" in builder.config.groups:
            builder._encoder = service_encoder(Path(workspace) / "artifacts", builder.config.encoder, path.name)
        ann = build_ann(builder.items.vectors)
    version = f"{path.name}@{int(path.stat().st_mtime)}"
    scorer = FastScorer(student, builder)
    # warm up before serving: the query encoder loads lazily, and first calls pay one-off costs
    rows = np.arange(min(len(builder.items.item_ids), 100))
    scorer.score_rows("warm up", rows)
    return Model(version, scorer, builder, ann, tuple(student.scale.names), tuple(queries))


def import_bm25s_without_numba() -> None:
    """Import bm25s without numba: bm25s imports numba (and with it SciPy's full import, some 50 MB
    resident) whenever it is installed, for retrieval backends relkit never selects (its BM25 index
    scores with bm25s' numpy backend, the default)."""
    if "bm25s" in sys.modules or "numba" in sys.modules:
        return
    sys.modules["numba"] = None   # `import numba` raises ImportError while it is None: bm25s goes without
    try:
        import bm25s  # noqa: F401
    finally:
        del sys.modules["numba"]


def build_ann(vectors: np.ndarray | None):
    """A usearch HNSW index (inner product on unit vectors = cosine) keyed by catalog row."""
    if vectors is None or not len(vectors):
        return None
    from usearch.index import Index

    index = Index(ndim=vectors.shape[1], metric="ip", dtype="f32")
    index.add(np.arange(len(vectors), dtype=np.uint64), np.ascontiguousarray(vectors, dtype=np.float32))
    return index


class Service:
    """The app's state: the served `model` (a request holds whichever it read first), the query
    cache, and the lifespan (`FastAPI(lifespan=service.lifespan)`) that loads the active student,
    starts warming the cache (in the background: the service answers meanwhile), and follows
    promotions until the app stops."""

    def __init__(self, workspace: Path, metrics: Metrics, poll_seconds: float = 1.0,
                 warm_queries: int = WARM_QUERIES):
        self.workspace, self.metrics = Path(workspace), metrics
        self.poll_seconds, self.warm_queries = poll_seconds, warm_queries
        self.model: Model | None = None
        self.queries = QueryVectors(batch_sizes=metrics.encode_batch, waits=metrics.encode_wait)
        self.mtime: float | None = None     # of the active-student file last acted on (None: removed)
        self.waiting: float | None = None   # of a promotion that waits for a busy workspace
        self.warming: asyncio.Task | None = None   # the cache's warming at start, done or under way

    @asynccontextmanager
    async def lifespan(self, app):
        record, mtime = self.read_active()
        model = await asyncio.to_thread(load_model, self.workspace, record, None, self.known)
        self.set_model(model)
        self.mtime = mtime
        # the cache warms while the service answers: a restart is healthy as soon as the model is loaded
        self.warming = asyncio.create_task(self.warm(model))
        task = asyncio.create_task(self.follow_promotions())
        try:
            yield
        finally:
            task.cancel()
            self.warming.cancel()
            # what set_model froze goes back to the collector: frozen objects are never collected,
            # not even when the interpreter exits, and DuckDB's bindings then report them as leaked
            gc.unfreeze()

    @property
    def known(self) -> int:
        """How many known queries warm the cache."""
        return max(0, min(self.warm_queries, self.queries.size))

    async def query_vector(self, model: Model, query: str) -> np.ndarray | None:
        return await self.queries.get(model, query, self.metrics.query_cache)

    def set_model(self, model: Model) -> None:
        old = self.model
        self.model = model   # one assignment: a request holds whichever it read first
        self.metrics.serving(model.version, old.version if old is not None else None)
        # the catalog's features are millions of long-lived Python objects (ids, term sets): keep
        # them out of the collector's full passes, which otherwise stall requests for tens of ms
        # (unfrozen first, so that what a replaced model leaves in cycles is collected)
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    def read_active(self) -> tuple[dict, float]:
        file = self.workspace / ACTIVE_FILE
        record = active_student(self.workspace)
        if record is None:
            raise RelkitError(f"no student is active in {self.workspace}: run `relkit promote NAME` "
                              "(see `relkit status` for the students)")
        return record, file.stat().st_mtime

    async def follow_promotions(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.poll()
            except Exception as e:  # keep serving, keep polling
                logger.error("could not look for a promoted student: %s", e)

    async def poll(self) -> None:
        """Load the promoted student when the active-student file changed since the last look. What
        goes wrong is said once per change of the file, and the loaded model goes on serving."""
        file = self.workspace / ACTIVE_FILE
        try:
            mtime = file.stat().st_mtime
        except FileNotFoundError:
            if self.mtime is not None:   # removed: nothing to load, and nothing to repeat each poll
                logger.warning("%s was removed: serving %s until a student is promoted", file, self.model.version)
                self.mtime = None
            return
        if mtime == self.mtime:
            return
        try:
            record, mtime = self.read_active()
            model = await asyncio.to_thread(load_model, self.workspace, record, self.model, self.known)
            if model.builder.config.encoder != self.model.builder.config.encoder:
                await self.warm(model)      # a new query encoder: its cache is empty
        except WorkspaceBusy as e:          # a relkit command is writing it: try again at the next poll
            if self.waiting != mtime:
                self.waiting = mtime
                logger.warning("the promoted student waits for the workspace (trying again): %s", e)
            return
        except Exception as e:  # keep serving the old model; say why
            self.mtime = mtime
            self.metrics.reloads.labels("failed").inc()
            logger.error("could not switch to the promoted student: %s", e)
            return
        self.mtime = mtime
        self.set_model(model)
        self.metrics.reloads.labels("ok").inc()
        logger.info("now serving %s", model.version)

    async def warm(self, model: Model) -> None:
        if self.warm_queries <= 0 or not model.builder.dim:
            return
        started = time.perf_counter()
        try:
            n = await self.queries.warm(model, list(model.known[:self.known]))
        except Exception as e:  # a cold cache is slower, not wrong: serve anyway
            logger.error("could not warm the query cache (serving with it cold): %s", e)
            return
        logger.info("encoded %d known queries for the query cache in %.1f s", n, time.perf_counter() - started)
