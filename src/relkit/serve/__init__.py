"""The relevance service: FastAPI on uvicorn, serving a workspace's active student.

    relkit promote hd-all -w ws          # choose the student to serve (a running service follows)
    relkit serve -w ws --port 8000

Endpoints: `POST /v1/rerank` (score the given items for a query), `POST /v1/search` (BM25 and
nearest-neighbour candidates from the catalog, reranked by the student), `GET /healthz`,
`GET /metrics` (Prometheus), OpenAPI docs at `/docs`.

Everything a request needs is loaded once, at start-up (the lifespan): the student and its fast
scorer, the query encoder (the ONNX export `relkit promote` made: no torch in the process), the
catalog's features (item vectors, BM25 index, text-match terms), a usearch index over the item
vectors. The workspace database is read for that in a child process (relkit.student.snapshot),
read-only and closed again, so other relkit commands can use the workspace while the service runs
and the service process never loads DuckDB. The service polls the workspace's
`active-student` file (written by `relkit promote`); when it changes, the new student is loaded
beside the old one and swapped in with one assignment: requests in flight finish on the model they
started with, none is dropped.

The modules: `app` the routes (`create_app`, `serve`), `schemas` the request and response models
and the `Limits`, `state` the loaded model, promotions and the lifespan, `queries` the query
embedding cache, `metrics` the Prometheus metrics, `middleware` the body limit and the request
metrics. (`promote` and `active_student` live in `relkit.promotion`; they are importable from here
as before.)
"""
from relkit.promotion import ACTIVE_FILE, active_student, promote
from relkit.serve.app import create_app, is_loopback, serve
from relkit.serve.metrics import Metrics
from relkit.serve.queries import QueryVectors, known_queries
from relkit.serve.schemas import Limits
from relkit.serve.state import WARM_QUERIES, Model, Service, build_ann, load_model

__all__ = ["ACTIVE_FILE", "WARM_QUERIES", "Limits", "Metrics", "Model", "QueryVectors", "Service", "active_student",
           "build_ann", "create_app", "is_loopback", "known_queries", "load_model", "promote", "serve"]
