"""The service's routes: the app factory and `serve`, which runs it.

(No `from __future__ import annotations` here: FastAPI reads the request models, built per app
from its limits, from the handlers' live annotations.)
"""
import ipaddress
import json
import os
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Security
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import APIKeyHeader

from relkit import __version__
from relkit.errors import RelkitError
from relkit.promotion import active_student
from relkit.serve.metrics import Metrics
from relkit.serve.middleware import BodyLimit, Observe
from relkit.serve.schemas import Health, Limits, RequestModels, RerankResponse, SearchResponse, request_models
from relkit.serve.state import WARM_QUERIES, Model, Service

ERRORS = {400: {"description": "the body is not readable (not UTF-8 JSON)"},
          413: {"description": "the body is larger than the service accepts"}}


def create_app(workspace: str | os.PathLike, limits: Limits | None = None, api_key: str | None = None,
               poll_seconds: float = 1.0, warm_queries: int = WARM_QUERIES) -> FastAPI:
    """The FastAPI app for `workspace` (its models load when the app starts, and the vectors of
    up to `warm_queries` of the workspace's known queries are encoded before it answers)."""
    limits = limits or Limits()
    metrics = Metrics()
    service = Service(Path(workspace), metrics, poll_seconds, warm_queries)
    app = FastAPI(title="relkit", version=__version__, lifespan=service.lifespan,
                  description="Search relevance: rerank and search with a workspace's active student.")
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.include_router(ranking_routes(service, request_models(limits), api_key))
    app.include_router(operations_routes(service))
    app.add_middleware(Observe, latency=metrics.latency, requests=metrics.requests)
    app.state.relkit = service
    return app


def ranking_routes(service: Service, requests: RequestModels, api_key: str | None) -> APIRouter:
    """POST /v1/rerank and /v1/search, behind the API key when one is set."""
    # the key check (and its security scheme in the OpenAPI schema) exists only when a key is set
    guarded = ({"dependencies": [Depends(key_check(api_key))],
                "responses": {**ERRORS, 401: {"description": "missing or wrong X-API-Key header"}}}
               if api_key is not None else {"responses": ERRORS})
    router = APIRouter()

    @router.post("/v1/rerank", response_model=RerankResponse, **guarded)
    async def rerank(body: requests.rerank) -> Response:
        """Score the given items (catalog ids, or inline objects) for the query, best first."""
        model: Model = service.model
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
        qv = await service.query_vector(model, body.query)
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
        service.metrics.candidates_scored.inc(len(proba))
        return send({"model": model.version, "results": ranked(model, proba, names, flags, body.top_k),
                     "unknown_items": unknown})

    @router.post("/v1/search", response_model=SearchResponse, **guarded)
    async def search(body: requests.search) -> Response:
        """Candidates from the catalog (BM25 and embedding nearest neighbours), reranked by the student."""
        model: Model = service.model
        items = model.builder.items
        per_source = min(len(items.item_ids), max(2 * body.k, 100))
        found: dict[int, None] = {}
        if model.builder.bm25 is not None:
            found.update(dict.fromkeys(model.builder.bm25.top_k([body.query], per_source)[0]))
        qv = await service.query_vector(model, body.query)
        if model.ann is not None and qv is not None:
            hits = model.ann.search(qv, per_source)
            found.update(dict.fromkeys(int(key) for key in hits.keys))
        rows = np.fromiter(found, dtype=np.int64, count=len(found))
        proba = (model.scorer.score_rows(body.query, rows, qv) if len(rows)
                 else np.zeros((0, len(model.names)), dtype=np.float32))
        service.metrics.candidates_scored.inc(len(rows))
        ids = [items.item_ids[r] for r in rows]
        return send({"model": model.version, "candidates": len(rows),
                     "results": ranked(model, proba, ids, [False] * len(ids), body.k)})

    return router


def operations_routes(service: Service) -> APIRouter:
    """GET /healthz and /metrics (never behind the API key: probes and scrapers call them)."""
    router = APIRouter()

    @router.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        model: Model = service.model
        return Health(status="ok", model=model.version, items=len(model.builder.items.item_ids), relkit=__version__)

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics: requests, latency histograms, the served model."""
        return PlainTextResponse(service.metrics.exposition(), media_type=service.metrics.content_type)

    return router


def key_check(api_key: str):
    """A dependency that answers 401 unless the request's X-API-Key header is `api_key`."""
    header = APIKeyHeader(name="X-API-Key", auto_error=False)

    async def check_key(key: Annotated[str | None, Security(header)] = None) -> None:
        if key != api_key:
            raise HTTPException(status_code=401, detail="a valid X-API-Key header is required")
    return check_key


def ranked(model: Model, proba: np.ndarray, ids: list[str], inline: list[bool], top_k: int | None) -> list[dict]:
    """The results, best first, as plain dicts in the shape of `Scored` (built with whole-array
    numpy and sent without a second validation pass: a third of a request's time otherwise)."""
    gains = np.asarray(model.scorer.student.scale.gains, dtype=np.float64)
    scores = proba @ gains
    order = np.argsort(-scores, kind="stable")[:top_k]
    levels = (proba[order].argmax(axis=1) + 1).tolist()
    probabilities = np.round(proba[order].astype(np.float64), 6).tolist()
    return [{"item_id": ids[i], "score": score, "level": level, "probabilities": p, "inline": inline[i]}
            for i, score, level, p in zip(order.tolist(), scores[order].tolist(), levels, probabilities)]


def send(content: dict) -> Response:
    # the handlers' response models stay in the OpenAPI schema (and the tests check the bodies
    # against it); returning a Response skips FastAPI's re-validation of what was just built
    return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
