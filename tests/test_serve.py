"""The relevance service on a real uvicorn server on loopback, called over HTTP."""
import asyncio
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time

from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from conftest import ITEMS, free_port, make_shop, relkit, write_csv, write_teacher_labels
from relkit import RelkitError, Workspace, import_file
from relkit.features.embeddings import DEFAULT_ENCODER
from relkit.features.onnx_encoder import encoder_folder, has_export
from relkit.serve import ACTIVE_FILE, Limits, Metrics, QueryVectors, active_student, create_app, known_queries, load_model, promote, serve
from relkit.student import FastScorer, FeatureBuilder, FeatureConfig, Student, StudentConfig
from relkit.student.distill import Distiller

GROUPS = ("embedding", "bm25", "text_match")


class Server:
    """uvicorn in a thread, on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 120
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def served(shop):
    return serving_workspace(shop)


def serving_workspace(shop) -> Path:
    """A workspace with two students on the same features and one on other features; `a` is active."""
    write_teacher_labels(shop)
    distiller = Distiller(shop, "rule", FeatureConfig(groups=GROUPS))
    distiller.train(None, StudentConfig(epochs=30, patience=30, hidden=(32,), human_weight=0.0)).save(
        shop.artifacts / "student-a")
    distiller.train(None, StudentConfig(epochs=2, hidden=(8,), seed=5)).save(shop.artifacts / "student-b")
    other = Distiller(shop, "rule", FeatureConfig(groups=("bm25", "text_match")))
    other.train(None, StudentConfig(epochs=2, hidden=(8,))).save(shop.artifacts / "student-c")
    share_encoder_export(shop)
    promote(shop, "a")
    path = shop.path
    shop.close()   # the service opens the workspace read-only, as it would beside other relkit commands
    return path


EXPORTS: list[Path] = []


def share_encoder_export(shop) -> None:
    """The default encoder's ONNX export, which `promote` makes, is made once per test run: later
    workspaces get hard links to its files."""
    folder = encoder_folder(shop.artifacts, DEFAULT_ENCODER)
    if EXPORTS and has_export(EXPORTS[0]):
        shutil.copytree(EXPORTS[0], folder, copy_function=os.link)
    else:
        EXPORTS[:] = [folder]


def test_rerank_search_health_and_metrics(served):
    with Server(create_app(served, Limits(max_candidates=40))) as url, httpx.Client(base_url=url, timeout=30) as http:
        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["model"].startswith("student-a@") and health["items"] == len(ITEMS)

        body = {"query": "red chair", "items": ["blue-lamp", "red-chair", "nope", "blue-chair", "red-chair",
                                                {"title": "red chair", "description": "a sturdy chair painted red"}]}
        r = http.post("/v1/rerank", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["unknown_items"] == ["nope"]
        results = out["results"]
        assert [x["item_id"] for x in results][:2] in (["red-chair", "inline-5"], ["inline-5", "red-chair"])
        assert results[-1]["item_id"] == "blue-lamp" and len(results) == 4       # the repeated id is scored once
        scores = [x["score"] for x in results]
        assert scores == sorted(scores, reverse=True)
        twin, catalog = (next(x for x in results if x["item_id"] == i) for i in ("inline-5", "red-chair"))
        np.testing.assert_allclose(twin["probabilities"], catalog["probabilities"], atol=1e-5)
        assert catalog["level"] == 3 and twin["inline"] and not catalog["inline"]
        with Workspace.open(served, read_only=True) as ws:   # the same numbers as the library's scorer
            builder = FeatureBuilder.from_workspace(ws, FeatureConfig(groups=GROUPS))
        scorer = FastScorer(Student.load(served / "artifacts" / "student-a"), builder)
        np.testing.assert_allclose(catalog["probabilities"], scorer.score("red chair", ["red-chair"])[0], atol=1e-5)
        # the service answers what the scorer's rank gives a Python user
        library = scorer.rank("red chair", ["blue-lamp", "red-chair", "blue-chair", {**body["items"][-1], "item_id": "inline-5"}])
        assert [(h.item_id, h.level, h.inline) for h in library] == [(x["item_id"], x["level"], x["inline"]) for x in results]
        np.testing.assert_allclose([h.probabilities for h in library], [x["probabilities"] for x in results], atol=1e-5)
        assert len(http.post("/v1/rerank", json={**body, "top_k": 1}).json()["results"]) == 1

        found = http.post("/v1/search", json={"query": "green saw", "k": 3}).json()
        assert found["results"][0]["item_id"] == "green-saw" and len(found["results"]) == 3
        assert found["candidates"] >= 3

        metrics = http.get("/metrics").text
        assert 'relkit_requests_total{endpoint="/v1/rerank",status="200"} 2.0' in metrics
        assert 'relkit_request_seconds_bucket{endpoint="/v1/search",le="+Inf"} 1.0' in metrics
        assert 'relkit_model_info{version="student-a@' in metrics
        assert http.get("/docs").status_code == 200 and "/v1/rerank" in http.get("/openapi.json").json()["paths"]


def test_query_misses_that_arrive_together_share_one_encoder_call(served):

    model = load_model(served, active_student(served))
    calls = []
    encode = model.builder.query_vectors
    model.builder.query_vectors = lambda queries: calls.append(list(queries)) or encode(queries)
    queries = ["red chair", "blue lamp", "green sofa", "red chair", "oak table", "steel shelf"]

    async def burst(cache):
        return await asyncio.gather(*(cache.get(model, q) for q in queries))

    metrics = Metrics()
    cache = QueryVectors(max_batch=3, batch_sizes=metrics.encode_batch, waits=metrics.encode_wait)
    vectors = asyncio.run(burst(cache))
    # the six requests wait together: five distinct queries, in batches of at most three, the
    # repeated query encoded once; every vector is the encoder's own
    assert calls == [["red chair", "blue lamp", "green sofa"], ["oak table", "steel shelf"]]
    exposition = metrics.exposition()      # two encoder calls of 3 and 2 queries; five queries waited
    for line in ("relkit_query_encode_batch_count 2.0", "relkit_query_encode_batch_sum 5.0",
                 'relkit_query_encode_batch_bucket{le="2.0"} 1.0', 'relkit_query_encode_batch_bucket{le="4.0"} 2.0',
                 "relkit_query_encode_wait_seconds_count 5.0"):
        assert line in exposition, line
    np.testing.assert_allclose(np.stack(vectors), encode(queries), atol=1e-5)
    assert (cache.hits, cache.misses) == (0, 6)
    asyncio.run(burst(cache))                # all cached now: no encoder call
    assert len(calls) == 2 and cache.hits == 6


def test_known_queries_are_encoded_once_the_service_answers(shop, tmp_path, monkeypatch):
    # the engagement log's queries first (most impressions first, as requests carry them: trimmed),
    # then the workspace's other queries by how many items they are paired with
    log = write_csv(tmp_path / "log.csv", ["query", "item_id", "impressions", "timestamp"], [
        ["  cordless drill ", ITEMS[0][0], "50", "2025-01-02T00:00:00Z"],
        ["oak table", ITEMS[1][0], "9", "2025-01-02T00:00:00Z"],
        ["cordless drill", ITEMS[2][0], "7", "2025-01-03T00:00:00Z"],
        ["red chair", ITEMS[3][0], "20", "2025-01-02T00:00:00Z"]])
    import_file(shop, "engagement", log)
    candidates = write_csv(tmp_path / "pairs.csv", ["query", "item_id"], [["blue lamp", item[0]] for item in ITEMS[:5]])
    import_file(shop, "pairs", candidates)
    n_queries = shop.count("queries")
    path = serving_workspace(shop)

    known = known_queries(path, 10_000)
    assert known[:4] == ["cordless drill", "red chair", "oak table", "blue lamp"]
    assert len(known) == len(set(known)) == n_queries + 2     # + the two logged queries nobody judged
    assert known_queries(path, 3) == known[:3] and known_queries(path, 0) == []

    # the warming waits here until the service has answered: it starts healthy, with the cache empty
    answered = threading.Event()
    warm = QueryVectors.warm

    async def warm_when_answered(self, model, queries):
        await asyncio.to_thread(answered.wait, 60)
        return await warm(self, model, queries)

    monkeypatch.setattr(QueryVectors, "warm", warm_when_answered)
    app = create_app(path, warm_queries=5)
    with Server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        cache: QueryVectors = app.state.relkit.queries
        model = app.state.relkit.model
        assert http.get("/healthz").status_code == 200 and not cache.cache
        answered.set()
        wait_warmed(app)
        assert [q for _, q in cache.cache] == known[:5] and (cache.hits, cache.misses) == (0, 0)
        np.testing.assert_allclose(cache.cache[(model.builder.config.encoder, "red chair")],
                                   model.builder.query_vectors(["red chair"])[0], atol=1e-5)
        for query in (known[4], "  red chair", known[5]):
            assert http.post("/v1/rerank", json={"query": query, "items": [ITEMS[0][0]]}).status_code == 200
        assert (cache.hits, cache.misses) == (2, 1)
    assert len(create_app(path, warm_queries=0).state.relkit.queries.cache) == 0


def test_bad_requests_get_clear_errors(served):
    with Server(create_app(served, Limits(max_candidates=5, max_body_bytes=2000))) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        def error(body, status):
            r = http.post("/v1/rerank", json=body)
            assert r.status_code == status, r.text
            return r.json()["detail"]

        assert error({"query": "   ", "items": ["red-chair"]}, 422)[0]["loc"] == ["body", "query"]
        assert error({"items": ["red-chair"]}, 422)[0]["loc"] == ["body", "query"]
        assert error({"query": "chair", "items": []}, 422)[0]["loc"] == ["body", "items"]
        assert error({"query": "chair", "items": ["a"] * 6}, 422)[0]["loc"] == ["body", "items"]
        assert error({"query": "chair", "items": ["red-chair"], "top_k": 0}, 422)[0]["loc"] == ["body", "top_k"]
        assert error({"query": "chair", "items": [{"description": "no title"}]}, 422)
        assert "larger than 2000 bytes" in error({"query": "chair", "items": ["x" * 3000]}, 413)[0]["msg"]
        r = http.post("/v1/rerank", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        assert http.post("/v1/search", json={"query": "chair", "k": 0}).status_code == 422
        for not_an_integer in (True, "10", 2.5):        # as the OpenAPI schema says: a JSON integer
            assert http.post("/v1/search", json={"query": "chair", "k": not_an_integer}).status_code == 422
            assert error({"query": "chair", "items": ["red-chair"], "top_k": not_an_integer}, 422)
        assert http.post("/v1/search", json={"query": "chair", "k": 2.0}).status_code == 200
        assert http.post("/v1/rerank", json={"query": "chair", "items": ["nope"]}).json()["results"] == []


def test_api_key_and_binding(served):
    with Server(create_app(served, api_key="s3cret")) as url, httpx.Client(base_url=url, timeout=30) as http:
        body = {"query": "red chair", "items": ["red-chair"]}
        assert http.post("/v1/rerank", json=body).status_code == 401
        assert http.post("/v1/rerank", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert http.post("/v1/rerank", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert http.get("/healthz").status_code == 200
    with pytest.raises(RelkitError, match="set an API key"):
        serve(served, host="0.0.0.0")


def test_promotion_switches_models_without_dropping_requests(served):
    with Server(create_app(served, poll_seconds=0.1)) as url, httpx.Client(base_url=url, timeout=60) as http:
        body = {"query": "blue lamp", "items": [i for i, _, _ in ITEMS]}
        statuses, versions, stop = [], [], threading.Event()

        def hammer():
            with httpx.Client(base_url=url, timeout=60) as client:
                while not stop.is_set():
                    r = client.post("/v1/rerank", json=body)
                    statuses.append(r.status_code)
                    versions.append(r.json().get("model", "") if r.status_code == 200 else "")

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            time.sleep(0.5)
            with Workspace.open(served) as ws:
                promote(ws, "b")                       # same features: only the scorer changes
            wait_for(http, "student-b@")
            with Workspace.open(served) as ws:
                promote(ws, "c")                       # other features: rebuilt from the workspace first
            wait_for(http, "student-c@")
            time.sleep(0.3)
        finally:
            stop.set()
            thread.join()
        assert statuses and set(statuses) == {200}
        seen = list(dict.fromkeys(v.split("@")[0] for v in versions))
        assert seen == ["student-a", "student-b", "student-c"]
        metrics = http.get("/metrics").text
        assert 'relkit_model_reloads_total{outcome="ok"} 2.0' in metrics


def wait_warmed(app, seconds: float = 60) -> None:
    """Until the query cache's warming, which starts once the service answers, is done."""
    deadline = time.time() + seconds
    while not app.state.relkit.warming.done():
        assert time.time() < deadline, "the query cache was not warmed"
        time.sleep(0.05)


def wait_for(http, prefix: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not http.get("/healthz").json()["model"].startswith(prefix):
        if time.time() > deadline:
            raise AssertionError(f"the service did not switch to {prefix}")
        time.sleep(0.05)


def test_service_refuses_to_start_without_an_active_student(shop):
    path = shop.path
    shop.close()
    with pytest.raises(RelkitError, match="no student is active"):
        serve(path)


FUZZ_KEY = "fuzz-key"


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    """The OpenAPI schema of a running service (one for the module's fuzzing)."""
    path = serving_workspace(make_shop(tmp_path_factory.mktemp("fuzz")))
    # a body limit far above what the generator makes: 413 (tested above) is not among the statuses
    # schemathesis expects for invalid data
    with Server(create_app(path, Limits(max_candidates=50, max_body_bytes=64 * 1024 * 1024), api_key=FUZZ_KEY)) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def test_the_openapi_schema_is_the_published_one(served):
    """The service's schema is what clients were built against: tests/data/serve-openapi.json, the
    schema before the service dropped torch, gained replicas and the Content-Language header. A
    change to it must be deliberate: regenerate the file and say so."""
    published = json.loads((Path(__file__).parent / "data" / "serve-openapi.json").read_text())
    with Server(create_app(served)) as url:
        assert httpx.get(f"{url}/openapi.json").json() == published


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzzed_requests_never_get_a_server_error(api_schema, mode):
    """Requests generated from the OpenAPI schema, valid (positive) and invalid (negative), on a
    service with an API key: no 5xx, every response matches the schema, bad keys get 401. (schemathesis's pytest plugin predates this pytest, so
    the cases are drawn with hypothesis directly.)"""
    strategy = api_schema.as_strategy(generation_mode=schemathesis.GenerationMode(mode),
                                      headers={"X-API-Key": FUZZ_KEY})

    @given(case=strategy)
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate()

    check()


def test_the_api_key_is_compared_in_constant_time(served, monkeypatch):
    """The key check goes through hmac.compare_digest (a `!=` returns sooner the earlier the first
    wrong character, which lets a caller find the key a character at a time)."""
    import hmac

    compared, real = [], hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    with Server(create_app(served, api_key="s3cret")) as url, httpx.Client(base_url=url, timeout=30) as http:
        body = {"query": "red chair", "items": ["red-chair"]}
        assert http.post("/v1/rerank", json=body, headers={"X-API-Key": "s3cres"}).status_code == 401
        assert http.post("/v1/rerank", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        # a key that is not ASCII is a wrong key, not a server error
        assert http.post("/v1/rerank", json=body, headers={"X-API-Key": "s3crét".encode()}).status_code == 401
    assert len(compared) == 3 and all(isinstance(a, bytes) and b == b"s3cret" for a, b in compared)


def test_a_removed_active_student_file_is_reported_once_and_the_model_kept(served, caplog):
    app = create_app(served, poll_seconds=0.05)
    with Server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        wait_warmed(app)                                      # its log line comes before
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="relkit.serve"):
            (served / ACTIVE_FILE).unlink()
            time.sleep(1.0)                                   # some twenty polls
            said = [r.getMessage() for r in caplog.records if r.name.startswith("relkit.serve")]
        assert len(said) == 1 and "student-a@" in said[0], said
        assert http.get("/healthz").json()["model"].startswith("student-a@")
        assert http.post("/v1/rerank", json={"query": "red chair", "items": ["red-chair"]}).status_code == 200
        assert 'relkit_model_reloads_total{outcome="failed"}' not in http.get("/metrics").text
        with Workspace.open(served) as ws:
            promote(ws, "b")                                  # promoting again is followed as before
        wait_for(http, "student-b@")


def test_a_promotion_met_by_a_busy_workspace_is_loaded_when_it_frees(served):
    """A student with other features needs the workspace read; while it cannot be (another process
    writes it, or here this one holds it open), the service keeps the old model and tries again."""
    app = create_app(served, poll_seconds=0.05)
    with Server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        # the warming reads the workspace once the service answers (read-only, here in this process,
        # where DuckDB then refuses a writing connection): the test's writer comes after it
        wait_warmed(app)
        with Workspace.open(served) as ws:
            promote(ws, "c")
            time.sleep(0.5)                                   # polls that find the workspace busy
            assert http.get("/healthz").json()["model"].startswith("student-a@")
        wait_for(http, "student-c@")
        metrics = http.get("/metrics").text
        assert 'relkit_model_reloads_total{outcome="ok"} 1.0' in metrics
        assert 'relkit_model_reloads_total{outcome="failed"}' not in metrics


def test_a_stopped_service_leaves_nothing_alive_at_exit(served):
    """The service keeps its model out of the collector's passes (gc.freeze); once it stops, that is
    undone, or the objects stay alive past the interpreter's exit and DuckDB's bindings report them
    ("nanobind: leaked ... DuckDBPyType instances")."""
    code = f"""
import threading, time, httpx, uvicorn
from relkit.serve import create_app
server = uvicorn.Server(uvicorn.Config(create_app({str(served)!r}, warm_queries=0), host="127.0.0.1",
                                       port={free_port()}, log_level="warning"))
thread = threading.Thread(target=server.run)
thread.start()
while not server.started:
    assert thread.is_alive()
    time.sleep(0.05)
assert httpx.get(f"http://127.0.0.1:{{server.config.port}}/healthz").status_code == 200
server.should_exit = True
thread.join()
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "leaked" not in result.stderr, result.stderr[:2000]


def test_megabytes_are_one_unit_across_commands(shop, monkeypatch):
    """`relkit serve --max-body-mb` and `relkit caption --max-mb` both count 1,000,000 bytes to the MB,
    and the service's default limit is the CLI's default."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import relkit.captions
    import relkit.serve
    from relkit.cli import app

    path = str(shop.path)
    shop.close()
    seen = {}
    @functools.wraps(relkit.serve.serve)   # the real signature: `relkit serve` shows its defaults
    def serve(workspace, limits=None, **kw):
        seen.setdefault("serve", []).append(limits.max_body_bytes)

    monkeypatch.setattr(relkit.serve, "serve", serve)
    real = relkit.captions.caption_items

    @functools.wraps(real)   # its signature stays the real one: `relkit caption --help` shows its defaults
    def caption_items(ws, max_bytes=None, **kw):
        return seen.setdefault("caption", []).append(max_bytes) or SimpleNamespace(summary=lambda: "done")

    monkeypatch.setattr(relkit.captions, "caption_items", caption_items)
    runner = CliRunner()
    for args in (["serve", "--max-body-mb", "2"], ["serve"], ["caption", "--max-mb", "2"]):
        result = runner.invoke(app, [*args, "-w", path])
        assert result.exit_code == 0, result.output
    assert seen == {"serve": [2_000_000, Limits().max_body_bytes], "caption": [2_000_000]}
    assert Limits().max_body_bytes == 4_000_000


NO_TORCH_SERVICE = """
import json, sys, threading, time, uvicorn
from relkit.serve import create_app
server = uvicorn.Server(uvicorn.Config(create_app({path!r}, poll_seconds=0.05, warm_queries=10), host="127.0.0.1",
                                       port={port}, log_level="warning"))
thread = threading.Thread(target=server.run)
thread.start()
while not server.started:
    assert thread.is_alive()
    time.sleep(0.05)
print("ready", flush=True)
sys.stdin.readline()                      # the test's requests and promotions are done
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("torch", "sentence_transformers", "transformers", "sklearn", "numba", "pandas",
                                      "duckdb", "pyarrow"))
print(json.dumps(heavy), flush=True)
server.should_exit = True
thread.join()
"""


def service_process(path: Path, requests) -> tuple[list[str], str]:
    """Run the service on `path` in a process of its own, call `requests(http)`, and return the torch,
    sentence-transformers, transformers, scikit-learn, numba, pandas, DuckDB and pyarrow modules the
    process had imported, and what it logged."""
    port = free_port()
    service = subprocess.Popen([sys.executable, "-c", NO_TORCH_SERVICE.format(path=str(path), port=port)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert service.stdout.readline().strip() == "ready", service.stderr.read()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            requests(http)
        out, err = service.communicate("done\n", timeout=120)
    finally:
        service.kill()
    assert service.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


INLINE = {"title": "green hose", "description": "a hose"}


def test_the_service_process_imports_no_torch(served):
    """The service encodes queries, inline items and catalog items whose vectors the workspace has
    not cached with the ONNX export `promote` made, and follows promotions, all without torch (and
    without scikit-learn, numba or pandas, which a service needs for nothing: 34 to 60 MB resident each;
    nor DuckDB or pyarrow: the workspace is read in a child process, whose 40 to 50 MB go with it)."""
    with Workspace.open(served) as ws:         # two catalog items lose their cached vectors
        ws.run("DELETE FROM text_vectors WHERE text_hash IN (SELECT text_hash FROM text_vectors LIMIT 2)")

    def requests(http):
        body = {"query": "red chair", "items": ["red-chair", "blue-lamp", INLINE]}
        assert http.post("/v1/rerank", json=body).status_code == 200
        assert http.post("/v1/search", json={"query": "oak door", "k": 3}).status_code == 200
        with Workspace.open(served) as ws:
            promote(ws, "c")                      # other features: the catalog read again
        wait_for(http, "student-c@")
        with Workspace.open(served) as ws:
            promote(ws, "b")                      # back to the encoder: its catalog vectors rebuilt
        wait_for(http, "student-b@")
        r = http.post("/v1/rerank", json={**body, "query": "a query never seen"})
        assert r.status_code == 200 and r.json()["model"].startswith("student-b@")

    heavy, log = service_process(served, requests)
    assert heavy == [], log[-2000:]
    assert "torch instead" not in log


def test_a_student_promoted_before_encoder_exports_is_served_with_torch(served):
    """A workspace whose encoder has no ONNX export (promoted by an older relkit) is served with the
    torch encoder, and the log says so once, with the command that fixes it."""
    shutil.rmtree(served / "artifacts" / "encoders")

    def requests(http):
        r = http.post("/v1/rerank", json={"query": "red chair", "items": ["red-chair", INLINE]})
        assert r.status_code == 200 and r.json()["results"][0]["item_id"] in ("red-chair", "inline-1")

    heavy, log = service_process(served, requests)
    assert "torch" in heavy and "sentence_transformers" in heavy
    said = [line for line in log.splitlines() if "no ONNX export" in line]
    assert len(said) == 1 and "encoding with torch instead" in said[0] and "run `relkit promote a` again" in said[0]
    with Workspace.open(served) as ws:
        promote(ws, "a")                          # promoting again exports it
    assert has_export(encoder_folder(served / "artifacts", DEFAULT_ENCODER))


def test_the_services_english_stopwords_are_scikit_learns_without_importing_it():
    """Text match drops scikit-learn's English stopwords; a process without scikit-learn (the
    service) reads the same list without importing it."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    code = ("import json, sys; from relkit.tokenization import _stopwords; "
            "print(json.dumps([sorted(_stopwords('en', 'match')), 'sklearn' in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    words, imported = json.loads(result.stdout)
    assert words == sorted(ENGLISH_STOP_WORDS) and not imported


def test_serve_refuses_what_is_not_a_workspace_before_it_starts(tmp_path):
    """`relkit serve` opens the workspace in a child process (the service never loads DuckDB) and
    says what is wrong with it there, before anything listens."""
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = relkit("serve", "-w", empty, "--port", free_port())
    assert missing.returncode == 2 and f"no relkit workspace at {empty}" in missing.stderr
    with Workspace.create(tmp_path / "other") as ws:
        ws.run("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    foreign = relkit("serve", "-w", tmp_path / "other", "--port", free_port())
    assert foreign.returncode == 2 and "has schema version 99; this relkit reads version 1" in foreign.stderr
