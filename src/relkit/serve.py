"""The relevance service: FastAPI on uvicorn, serving a workspace's active student.

    relkit promote hd-all -w ws          # choose the student to serve (a running service follows)
    relkit serve -w ws --port 8000

Endpoints: `POST /v1/rerank` (score the given items for a query), `POST /v1/search` (BM25 and
nearest-neighbour candidates from the catalog, reranked by the student), `GET /healthz`,
`GET /metrics` (Prometheus), OpenAPI docs at `/docs`.

Everything a request needs is loaded once, at start-up (the lifespan): the student and its fast
scorer, the catalog's features (item vectors, BM25 index, text-match terms), a usearch index over
the item vectors. The workspace database is opened read-only for that and closed again, so other
relkit commands can use the workspace while the service runs. The service polls the workspace's
`active-student` file (written by `relkit promote`); when it changes, the new student is loaded
beside the old one and swapped in with one assignment: requests in flight finish on the model they
started with, none is dropped.

(No `from __future__ import annotations` here: FastAPI reads the request models defined inside
`create_app` from the handlers' live annotations.)
"""

import asyncio
import gc
import ipaddress
import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from relkit.errors import RelkitError

ACTIVE_FILE = "active-student"
BLANK = " \t\n\r\f\v"   # what is trimmed from a request's query
WARM_QUERIES = 2000    # known queries encoded before the service answers (see known_queries)
log = logging.getLogger("relkit.serve")


# -- which student is served --------------------------------------------------------------------
def promote(ws, ref: str) -> str:
    """Make a saved student the one `relkit serve` serves; returns its folder name. The choice is a
    small file beside the database, replaced atomically, so a running service can follow it."""
    from relkit.student.system import StudentSystem

    path = StudentSystem.from_workspace(ws, ref).path
    from relkit.student.model import Student

    Student.load(path)  # refuse a broken folder now, not in the service
    record = {"student": path.name, "path": str(path.resolve()),
              "promoted": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    tmp = ws.path / (ACTIVE_FILE + ".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(ws.path / ACTIVE_FILE)
    return path.name


def active_student(workspace: Path) -> dict | None:
    file = Path(workspace) / ACTIVE_FILE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# -- the loaded model -------------------------------------------------------------------------
@dataclass
class Model:
    """One servable version: the student, its features and indexes. Immutable once built."""

    version: str
    scorer: object              # FastScorer
    builder: object             # FeatureBuilder
    ann: object                 # usearch Index over the item vectors, or None without them
    names: tuple[str, ...]      # the scale's level names


def load_model(workspace: Path, record: dict, reuse: Model | None = None) -> Model:
    """Build a Model for the student in `record`; the features and indexes of `reuse` are kept when
    the new student uses the same feature config."""
    from relkit.student.fast import FastScorer
    from relkit.student.features import FeatureBuilder
    from relkit.student.model import Student
    from relkit.workspace import Workspace

    path = Path(record["path"])
    if not path.is_dir():
        path = Path(workspace) / "artifacts" / record["student"]
    student = Student.load(path)
    if reuse is not None and reuse.builder.config == student.feature_config():
        builder, ann = reuse.builder, reuse.ann
    else:
        try:
            ws = Workspace.open(workspace, read_only=True)
        except RelkitError:
            raise
        except Exception as e:  # DuckDB refuses while another process writes the workspace
            raise RelkitError(f"cannot read the workspace {workspace} (is a relkit command writing it?): {e}") from e
        with ws:
            builder = FeatureBuilder.from_workspace(ws, student.feature_config())
        ann = build_ann(builder.items.vectors)
    version = f"{path.name}@{int(path.stat().st_mtime)}"
    scorer = FastScorer(student, builder)
    # warm up before serving: the query encoder loads lazily, and first calls pay one-off costs
    rows = np.arange(min(len(builder.items.item_ids), 100))
    scorer.score_rows("warm up", rows)
    return Model(version, scorer, builder, ann, tuple(student.scale.names))


def build_ann(vectors: np.ndarray | None):
    """A usearch HNSW index (inner product on unit vectors = cosine) keyed by catalog row."""
    if vectors is None or not len(vectors):
        return None
    from usearch.index import Index

    index = Index(ndim=vectors.shape[1], metric="ip", dtype="f32")
    index.add(np.arange(len(vectors), dtype=np.uint64), np.ascontiguousarray(vectors, dtype=np.float32))
    return index


class QueryVectors:
    """Query embeddings for the service: an LRU cache, and one encoder call for all the misses that
    arrive together. A miss waits on a batch; while the encoder runs (in a worker thread, so the
    event loop goes on scoring requests whose query is cached), new misses gather for the next
    batch. Under load a batch of misses costs about half per query what single calls do (measured
    with MiniLM on one core: 21 ms for one query, ~10 ms each in batches of 8-32)."""

    def __init__(self, size: int = 20000, max_batch: int = 32):
        self.size, self.max_batch = size, max_batch
        self.cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.pending: OrderedDict[tuple[str, str], tuple[object, asyncio.Future]] = OrderedDict()
        self.encoding = False
        self.hits = self.misses = 0

    async def get(self, model: "Model", query: str, counter=None) -> np.ndarray | None:
        if not model.builder.dim:
            return None
        key = (model.builder.config.encoder, query)
        vector = self.cache.get(key)
        if counter is not None:
            counter.labels("miss" if vector is None else "hit").inc()
        if vector is not None:
            self.cache.move_to_end(key)
            self.hits += 1
            return vector
        self.misses += 1
        if key not in self.pending:
            self.pending[key] = (model, asyncio.get_running_loop().create_future())
        future = self.pending[key][1]
        if not self.encoding:
            self.encoding = True
            asyncio.create_task(self._encode_pending())
        return await asyncio.shield(future)   # a cancelled request leaves the batch to the others

    async def _encode_pending(self) -> None:
        try:
            while self.pending:
                batch = []
                for key, (model, future) in list(self.pending.items())[:self.max_batch]:
                    if batch and key[0] != batch[0][0][0]:
                        break                      # one encoder per call
                    batch.append((key, model, future))
                    del self.pending[key]
                try:
                    vectors = await asyncio.to_thread(batch[0][1].builder.query_vectors, [k[1] for k, _, _ in batch])
                except Exception as e:  # every request of the batch gets the error
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (key, _, future), vector in zip(batch, vectors):
                    self.cache[key] = vector
                    if not future.done():
                        future.set_result(vector)
                while len(self.cache) > self.size:
                    self.cache.popitem(last=False)
        finally:
            self.encoding = False

    async def warm(self, model: "Model", queries: list[str], batch: int = 64) -> int:
        """Put the vectors of `queries` in the cache before they are asked for (at most the cache's
        size); returns how many were encoded. Encoding runs in a worker thread a batch at a time,
        the cache is filled on the event loop."""
        if not model.builder.dim:
            return 0
        encoder = model.builder.config.encoder
        todo = [q for q in dict.fromkeys(queries) if (encoder, q) not in self.cache][:self.size]
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            vectors = await asyncio.to_thread(model.builder.query_vectors, chunk)
            for query, vector in zip(chunk, vectors):
                self.cache[(encoder, query)] = vector
        while len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return len(todo)


def known_queries(workspace: Path, limit: int) -> list[str]:
    """Up to `limit` of the workspace's queries, the likeliest to be asked first: those of the
    engagement log by impressions, then the other known queries (judged, or with candidate pairs)
    by how many items they are paired with."""
    from relkit.workspace import Workspace

    if limit <= 0:
        return []
    with Workspace.open(workspace, read_only=True) as ws:
        rows = ws.fetchall("""
            WITH logged AS (SELECT query, sum(impressions) AS impressions FROM engagement GROUP BY 1),
                 paired AS (SELECT query_id, count(*) AS n FROM
                              (SELECT query_id FROM judgments UNION ALL SELECT query_id FROM pairs)
                            GROUP BY query_id),
                 known AS (SELECT q.query, sum(coalesce(p.n, 0)) AS n
                           FROM queries q LEFT JOIN paired p USING (query_id) GROUP BY 1)
            SELECT coalesce(l.query, k.query) AS query
            FROM logged l FULL OUTER JOIN known k ON l.query = k.query
            ORDER BY coalesce(l.impressions, 0) DESC, coalesce(k.n, 0) DESC, query""")
    # as a request's query is keyed: without the blanks around it
    queries = dict.fromkeys(q.strip(BLANK) for (q,) in rows)
    queries.pop("", None)
    return list(queries)[:limit]


# -- the app ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    max_candidates: int = 1000          # items per rerank request
    max_search_k: int = 1000
    max_query_chars: int = 1000
    max_text_chars: int = 20000         # per inline item field
    max_body_bytes: int = 4 * 1024 * 1024


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before the app parses it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message]), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._too_large(send)
            more = message.get("more_body", False)
        return await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}],
                                             receive), send)

    async def _too_large(self, send):
        body = json.dumps({"detail": [{"loc": ["body"], "type": "too_large",
                                       "msg": f"the request body is larger than {self.limit} bytes"}]}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class Observe:
    """ASGI middleware: per-endpoint request counts and latency; an exception becomes a JSON 500
    (logged), never a traceback or a dropped connection."""

    def __init__(self, app, latency, requests):
        self.app, self.latency, self.requests = app, latency, requests

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status, started = 500, False

        async def observe(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)
        try:
            await self.app(scope, receive, observe)
        except Exception:
            log.exception("error serving %s", scope.get("path"))
            if not started:
                body = b'{"detail":"internal error"}'
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            status = 500
        endpoint = getattr(scope.get("route"), "path", "unmatched")
        self.latency.labels(endpoint).observe(time.perf_counter() - start)
        self.requests.labels(endpoint, str(status)).inc()


def _replay(messages, then=None):
    queue = list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}
    return receive


def create_app(workspace: str | os.PathLike, limits: Limits | None = None, api_key: str | None = None,
               poll_seconds: float = 1.0, warm_queries: int = WARM_QUERIES):
    """The FastAPI app for `workspace` (its models load when the app starts, and the vectors of
    up to `warm_queries` of the workspace's known queries are encoded before it answers)."""
    from contextlib import asynccontextmanager
    from typing import Annotated, Literal

    from fastapi import Depends, FastAPI, HTTPException, Security
    from fastapi.responses import PlainTextResponse, Response
    from fastapi.security import APIKeyHeader
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from pydantic import BaseModel, ConfigDict, Field, field_validator

    from relkit import __version__

    workspace = Path(workspace)
    limits = limits or Limits()
    registry = CollectorRegistry()
    requests = Counter("relkit_requests", "Requests by endpoint and status", ["endpoint", "status"], registry=registry)
    latency = Histogram("relkit_request_seconds", "Request latency by endpoint", ["endpoint"], registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
    candidates_scored = Counter("relkit_candidates_scored", "Candidates scored by the student", registry=registry)
    model_info = Gauge("relkit_model_info", "The served student (value 1)", ["version"], registry=registry)
    reloads = Counter("relkit_model_reloads", "Active-student changes picked up", ["outcome"], registry=registry)
    query_cache = Counter("relkit_query_vectors", "Query embeddings from the cache (hit) or the encoder (miss)",
                          ["result"], registry=registry)

    state: dict = {"model": None, "mtime": None, "queries": QueryVectors()}

    def set_model(model: Model) -> None:
        old = state["model"]
        state["model"] = model   # one assignment: a request holds whichever it read first
        if old is not None:
            model_info.remove(old.version)
        model_info.labels(model.version).set(1)
        # the catalog's features are millions of long-lived Python objects (ids, term sets): keep
        # them out of the collector's full passes, which otherwise stall requests for tens of ms
        # (unfrozen first, so that what a replaced model leaves in cycles is collected)
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    def read_active() -> tuple[dict, float]:
        file = workspace / ACTIVE_FILE
        record = active_student(workspace)
        if record is None:
            raise RelkitError(f"no student is active in {workspace}: run `relkit promote NAME` "
                              "(see `relkit status` for the students)")
        return record, file.stat().st_mtime

    async def follow_promotions() -> None:
        while True:
            await asyncio.sleep(poll_seconds)
            try:
                mtime = (workspace / ACTIVE_FILE).stat().st_mtime
                if mtime == state["mtime"]:
                    continue
                record, mtime = read_active()
                model = await asyncio.to_thread(load_model, workspace, record, state["model"])
                if model.builder.config.encoder != state["model"].builder.config.encoder:
                    await warm(model)      # a new query encoder: its cache is empty
                state["mtime"] = mtime
                set_model(model)
                reloads.labels("ok").inc()
                log.warning("now serving %s", model.version)
            except Exception as e:  # keep serving the old model; say why
                state["mtime"] = (workspace / ACTIVE_FILE).stat().st_mtime if (workspace / ACTIVE_FILE).exists() else None
                reloads.labels("failed").inc()
                log.error("could not switch to the promoted student: %s", e)

    async def warm(model: Model) -> None:
        if warm_queries <= 0 or not model.builder.dim:
            return
        started = time.perf_counter()
        try:
            queries = await asyncio.to_thread(known_queries, workspace, min(warm_queries, state["queries"].size))
            n = await state["queries"].warm(model, queries)
        except Exception as e:  # a cold cache is slower, not wrong: serve anyway
            log.error("could not warm the query cache (serving with it cold): %s", e)
            return
        log.warning("encoded %d known queries for the query cache in %.1f s", n, time.perf_counter() - started)

    @asynccontextmanager
    async def lifespan(app):
        record, mtime = read_active()
        model = await asyncio.to_thread(load_model, workspace, record)
        await warm(model)
        set_model(model)
        state["mtime"] = mtime
        task = asyncio.create_task(follow_promotions())
        yield
        task.cancel()

    app = FastAPI(title="relkit", version=__version__, lifespan=lifespan,
                  description="Search relevance: rerank and search with a workspace's active student.")
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)

    header = APIKeyHeader(name="X-API-Key", auto_error=False)

    async def check_key(key: Annotated[str | None, Security(header)] = None) -> None:
        if key != api_key:
            raise HTTPException(status_code=401, detail="a valid X-API-Key header is required")

    # the key check (and its security scheme in the OpenAPI schema) exists only when a key is set
    errors = {400: {"description": "the body is not readable (not UTF-8 JSON)"},
              413: {"description": "the body is larger than the service accepts"}}
    guarded = ({"dependencies": [Depends(check_key)],
                "responses": {**errors, 401: {"description": "missing or wrong X-API-Key header"}}}
               if api_key is not None else {"responses": errors})

    Text = Annotated[str, Field(max_length=limits.max_text_chars)]

    class InlineItem(BaseModel):
        """An item given in the request instead of by id."""
        model_config = ConfigDict(extra="forbid")
        item_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
        title: Annotated[str, Field(min_length=1, max_length=limits.max_text_chars)]
        description: Text | None = None
        board_titles: Annotated[list[Text], Field(max_length=100)] | None = None
        link_title: Text | None = None
        link_description: Text | None = None

    class QueryModel(BaseModel):
        model_config = ConfigDict(extra="forbid")
        # at least one character that is not (ASCII) blank: the same rule in the schema and the check
        query: Annotated[str, Field(min_length=1, max_length=limits.max_query_chars, pattern=r"[^ \t\n\r\f\v]",
                                    description="the search query; not empty or blank")]

        @field_validator("query")
        @classmethod
        def trimmed(cls, value: str) -> str:
            return value.strip(BLANK)

    class RerankRequest(QueryModel):
        items: Annotated[list[Annotated[str, Field(min_length=1, max_length=256)] | InlineItem],
                         Field(min_length=1, max_length=limits.max_candidates)]
        top_k: Annotated[int, Field(ge=1)] | None = None

    class SearchRequest(QueryModel):
        k: Annotated[int, Field(ge=1, le=limits.max_search_k)] = 10

    class Scored(BaseModel):
        item_id: str
        score: float = Field(description="expected gain under the level probabilities")
        level: int = Field(description="the student's level, 1..K: its expected level cut at the cutpoints "
                                       "fit on dev (the most probable level for a student without cutpoints)")
        probabilities: list[float]
        inline: bool = False

    class RerankResponse(BaseModel):
        model: str
        results: list[Scored]
        unknown_items: list[str] = Field(description="ids not in the catalog (not scored)")

    class SearchResponse(BaseModel):
        model: str
        candidates: int
        results: list[Scored]

    class Health(BaseModel):
        status: Literal["ok"]
        model: str
        items: int
        relkit: str

    def ranked(model: Model, proba: np.ndarray, ids: list[str], inline: list[bool], top_k: int | None) -> list[dict]:
        """The results, best first, as plain dicts in the shape of `Scored` (built with whole-array
        numpy and sent without a second validation pass: a third of a request's time otherwise)."""
        gains = np.asarray(model.scorer.student.scale.gains, dtype=np.float64)
        scores = proba @ gains
        order = np.argsort(-scores, kind="stable")[:top_k]
        levels = model.scorer.student.predict_levels(proba[order]).tolist()
        probabilities = np.round(proba[order].astype(np.float64), 6).tolist()
        return [{"item_id": ids[i], "score": score, "level": level, "probabilities": p, "inline": inline[i]}
                for i, score, level, p in zip(order.tolist(), scores[order].tolist(), levels, probabilities)]

    def send(content: dict) -> Response:
        # the handlers' response models stay in the OpenAPI schema (and the tests check the bodies
        # against it); returning a Response skips FastAPI's re-validation of what was just built
        return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")

    @app.post("/v1/rerank", response_model=RerankResponse, **guarded)
    async def rerank(body: RerankRequest) -> Response:
        """Score the given items (catalog ids, or inline objects) for the query, best first."""
        model: Model = state["model"]
        position = model.builder.items.position
        seen, ids, rows, unknown, inline_records, inline_ids = set(), [], [], [], [], []
        for n, item in enumerate(body.items):
            if isinstance(item, str):
                if item in seen:
                    continue
                seen.add(item)
                if item in position:
                    ids.append(item)
                    rows.append(position[item])
                else:
                    unknown.append(item)
            else:
                inline_records.append(item.model_dump())
                inline_ids.append(item.item_id or f"inline-{n}")
        qv = await state["queries"].get(model, body.query, query_cache)
        parts, names, flags = [], [], []
        if rows:
            parts.append(model.scorer.score_rows(body.query, np.asarray(rows, dtype=np.int64), qv))
            names += ids
            flags += [False] * len(ids)
        if inline_records:
            table = model.builder.inline_items(inline_records)
            parts.append(model.scorer.score_rows(body.query, np.arange(len(inline_records)), qv, items=table))
            names += inline_ids
            flags += [True] * len(inline_ids)
        k = len(model.names)
        proba = np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.float32)
        candidates_scored.inc(len(proba))
        return send({"model": model.version, "results": ranked(model, proba, names, flags, body.top_k),
                     "unknown_items": unknown})

    @app.post("/v1/search", response_model=SearchResponse, **guarded)
    async def search(body: SearchRequest) -> Response:
        """Candidates from the catalog (BM25 and embedding nearest neighbours), reranked by the student."""
        model: Model = state["model"]
        items = model.builder.items
        per_source = min(len(items.item_ids), max(2 * body.k, 100))
        found: dict[int, None] = {}
        if model.builder.bm25 is not None:
            found.update(dict.fromkeys(model.builder.bm25.top_k([body.query], per_source)[0]))
        qv = await state["queries"].get(model, body.query, query_cache)
        if model.ann is not None and qv is not None:
            hits = model.ann.search(qv, per_source)
            found.update(dict.fromkeys(int(key) for key in hits.keys))
        rows = np.fromiter(found, dtype=np.int64, count=len(found))
        proba = (model.scorer.score_rows(body.query, rows, qv) if len(rows)
                 else np.zeros((0, len(model.names)), dtype=np.float32))
        candidates_scored.inc(len(rows))
        ids = [items.item_ids[r] for r in rows]
        return send({"model": model.version, "candidates": len(rows),
                     "results": ranked(model, proba, ids, [False] * len(ids), body.k)})

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        model: Model = state["model"]
        return Health(status="ok", model=model.version, items=len(model.builder.items.item_ids), relkit=__version__)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics: requests, latency histograms, the served model."""
        return PlainTextResponse(generate_latest(registry).decode(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Observe, latency=latency, requests=requests)
    app.state.relkit = state
    return app


def serve(workspace: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          limits: Limits | None = None, poll_seconds: float = 1.0, warm_queries: int = WARM_QUERIES) -> None:
    """Run the service until interrupted."""
    import uvicorn

    if not is_loopback(host) and not api_key:
        raise RelkitError(f"binding to {host} exposes the service beyond this machine: set an API key "
                          "(--api-key or RELKIT_API_KEY)")
    if active_student(Path(workspace)) is None:
        raise RelkitError(f"no student is active in {workspace}: run `relkit promote NAME` first")
    app = create_app(workspace, limits, api_key, poll_seconds, warm_queries)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
