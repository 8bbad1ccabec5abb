"""The service's routes: the app factory and `serve`, which runs it.

(No `from __future__ import annotations` here: FastAPI reads the request models, built per app
from its limits, from the handlers' live annotations.)
"""
import hmac
import json
import logging
import os
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Security
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import APIKeyHeader

from relkit import __version__
from relkit.errors import RelkitError
from relkit.languages import DETECTED, normalize_code
from relkit.net import is_loopback
from relkit.promotion import active_student
from relkit.serve.metrics import Metrics
from relkit.serve.middleware import BodyLimit, Observe
from relkit.serve.schemas import Health, Limits, RequestModels, RerankResponse, SearchResponse, request_models
from relkit.serve.state import WARM_QUERIES, Model, Service
from relkit.student.fast import Scored
from relkit.tokenization import STEMMERS

logger = logging.getLogger(__name__)
ERRORS = {400: {"description": "the body is not readable (not UTF-8 JSON)"},
          413: {"description": "the body is larger than the service accepts"}}


def create_app(workspace: str | os.PathLike, limits: Limits | None = None, api_key: str | None = None,
               poll_seconds: float = 1.0, warm_queries: int = WARM_QUERIES) -> FastAPI:
    """The FastAPI app for `workspace` (its models load when the app starts, and the vectors of
    up to `warm_queries` of the workspace's known queries are encoded once it answers)."""
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
    async def rerank(body: requests.rerank, request: Request) -> Response:
        """Score the given items (catalog ids, or inline objects) for the query, best first."""
        model: Model = service.model
        position = model.builder.items.position
        ids = list(dict.fromkeys(item for item in body.items if isinstance(item, str)))
        known = [i for i in ids if i in position]
        inline = [{**item.model_dump(), "item_id": item.item_id or f"inline-{n}"}
                  for n, item in enumerate(body.items) if not isinstance(item, str)]
        language = query_language(request)
        qv = await service.query_vector(model, body.query)
        results = model.scorer.rank(body.query, known + inline, body.top_k, query_vector=qv, language=language)
        service.metrics.candidates_scored.inc(len(known) + len(inline))
        return send({"model": model.version, "results": [as_json(s) for s in results],
                     "unknown_items": [i for i in ids if i not in position]})

    @router.post("/v1/search", response_model=SearchResponse, **guarded)
    async def search(body: requests.search, request: Request) -> Response:
        """Candidates from the catalog (BM25 and embedding nearest neighbours), reranked by the student."""
        model: Model = service.model
        items = model.builder.items
        per_source = min(len(items.item_ids), max(2 * body.k, 100))
        language = query_language(request)
        found: dict[int, None] = {}
        if model.builder.bm25 is not None:
            found.update(dict.fromkeys(model.builder.bm25.top_k([body.query], per_source, [language])[0]))
        qv = await service.query_vector(model, body.query)
        if model.ann is not None and qv is not None:
            hits = model.ann.search(qv, per_source)
            found.update(dict.fromkeys(int(key) for key in hits.keys))
        ids = [items.item_ids[row] for row in found]
        results = model.scorer.rank(body.query, ids, body.k, query_vector=qv, language=language)
        service.metrics.candidates_scored.inc(len(ids))
        return send({"model": model.version, "candidates": len(ids), "results": [as_json(s) for s in results]})

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
    expected = api_key.encode("utf-8")

    async def check_key(key: Annotated[str | None, Security(header)] = None) -> None:
        # in constant time: `!=` answers sooner the earlier the first wrong character, which lets a
        # caller find the key a character at a time. As bytes, since compare_digest takes only ASCII
        # strings: the header's own bytes (the server decoded them as latin-1) against the key's UTF-8
        if key is None or not hmac.compare_digest(key.encode("latin-1"), expected):
            raise HTTPException(status_code=401, detail="a valid X-API-Key header is required")
    return check_key


def query_language(request: Request) -> str | None:
    """The query's language from the request's Content-Language header (RFC 9110: the language of
    the request's content) as an ISO 639-1 code, 'de' for 'de-AT'; None without the header (the
    query's language is then detected). Read from the raw request, not declared, so the OpenAPI
    schema stays the same; a value that names no language relkit knows is a 422."""
    raw = request.headers.get("content-language")
    if raw is None:
        return None
    try:
        code = normalize_code(raw)
    except ValueError:
        code = None
    if code not in DETECTED and code not in STEMMERS:
        raise HTTPException(status_code=422, detail=[{
            "loc": ["header", "Content-Language"], "type": "value_error", "input": raw,
            "msg": "the Content-Language header must name the query's language as one ISO 639-1 code "
                   f"such as 'en', 'de' or 'pt-BR'; found {raw!r}"}])
    return code


def as_json(scored: Scored) -> dict:
    return {"item_id": scored.item_id, "score": scored.score, "level": scored.level,
            "probabilities": scored.probabilities, "inline": scored.inline}


def send(content: dict) -> Response:
    # the handlers' response models stay in the OpenAPI schema (and the tests check the bodies
    # against it); returning a Response skips FastAPI's re-validation of what was just built
    return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")


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
    logger.info("relkit: serving %s on http://%s:%d (docs at /docs)", workspace, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
