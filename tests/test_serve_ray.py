"""The service on Ray Serve: two replicas on a local two-node Ray cluster, called over HTTP on
loopback; a promotion reaches every replica."""
import os
import time

import httpx
import pytest
from conftest import free_port, write_teacher_labels

from relkit import RelkitError, Workspace
from relkit.serve import create_app, promote
from relkit.serve.replicas import NODE_HEADER, REPLICA_HEADER, check_workspace, deploy
from relkit.student import FeatureConfig, StudentConfig
from relkit.student.distill import Distiller
from relkit.workspace import ACTIVE_FILE

# Ray Serve's own config models use pydantic features pydantic 2 deprecates
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")
GROUPS = ("bm25", "text_match")   # no query encoder: the replicas start in a second or two


@pytest.fixture
def two_students(shop):
    """The shop workspace with students `a` (active) and `b`, closed (the replicas open it read-only)."""
    write_teacher_labels(shop)
    distiller = Distiller(shop, "rule", FeatureConfig(groups=GROUPS))
    distiller.train(None, StudentConfig(epochs=2, hidden=(8,))).save(shop.artifacts / "student-a")
    distiller.train(None, StudentConfig(epochs=2, hidden=(8,), seed=5)).save(shop.artifacts / "student-b")
    promote(shop, "a")
    shop.close()
    return shop.path


@pytest.fixture
def cluster(monkeypatch):
    """A Ray cluster of two nodes (a head and a worker, one CPU each) on this machine."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    # a proxy sends requests to replicas on its own node first; the one proxy here (on the head) is
    # to spread them over both nodes, as a load balancer in front of every node's proxy would
    monkeypatch.setenv("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING", "0")
    monkeypatch.setenv("RAY_SERVE_PROXY_PREFER_LOCAL_AZ_ROUTING", "0")
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        nodes.add_node(num_cpus=1)
        ray.init(address=nodes.address, log_to_driver=False, include_dashboard=False)
        yield nodes
    finally:
        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
            nodes.shutdown()


def seen(http: httpx.Client, replicas: int, want_model: str | None = None, tries: int = 400) -> dict:
    """replica id -> (node id, model) over GET /healthz, until `replicas` replicas answered (and all
    with `want_model`, when given)."""
    found: dict[str, tuple[str, str]] = {}
    for _ in range(tries):
        r = http.get("/healthz")
        assert r.status_code == 200, r.text
        found[r.headers[REPLICA_HEADER]] = (r.headers[NODE_HEADER], r.json()["model"])
        models = {model.split("@")[0] for _, model in found.values()}
        if len(found) == replicas and (want_model is None or models == {want_model}):
            return found
        time.sleep(0.05)
    return found


def test_two_replicas_on_two_nodes_follow_a_promotion(two_students, cluster, monkeypatch, tmp_path):
    import ray

    port = free_port()
    with monkeypatch.context() as patched:   # past the check here: the replicas' own check refuses it
        patched.setattr("relkit.serve.replicas._check_start", lambda *args: None)
        with pytest.raises(RelkitError, match=r"did not start on Ray: on Ray node [0-9a-f]{56} \(.+\), the workspace "
                                              r".+/nowhere is not readable .+ at this same path"):
            deploy(tmp_path / "nowhere", port=port, proxy_location="HeadOnly")
    with pytest.raises(RelkitError, match=f"HTTP proxies on 127.0.0.1:{port}, which it keeps"):
        deploy(two_students, port=port + 1, proxy_location="HeadOnly")   # Ray Serve's address is the cluster's

    url = deploy(two_students, replicas=2, port=port, poll_seconds=0.2, warm_queries=0, max_replicas_per_node=1,
                 proxy_location="HeadOnly")
    assert url == f"http://127.0.0.1:{port}"
    nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    with httpx.Client(base_url=url, timeout=30) as http:
        before = seen(http, 2)
        assert len(before) == 2                                       # both replicas answer requests
        assert {node for node, _ in before.values()} == nodes         # one on each node
        assert {model.split("@")[0] for _, model in before.values()} == {"student-a"}

        # the same routes and schemas as the single-process service
        assert http.get("/openapi.json").json() == create_app(two_students).openapi()
        r = http.post("/v1/rerank", json={"query": "red chair", "items": ["blue-lamp", "red-chair", "nope"]})
        assert r.status_code == 200 and r.json()["unknown_items"] == ["nope"]
        assert r.json()["results"][0]["item_id"] == "red-chair"

        with Workspace.open(two_students) as ws:
            promote(ws, "b")
        after = seen(http, 2, want_model="student-b")
        assert set(after) == set(before)                              # the same replicas, switched in place
        assert {model.split("@")[0] for _, model in after.values()} == {"student-b"}


def test_a_workspace_a_replica_cannot_read_is_refused_at_start(two_students, tmp_path):
    assert check_workspace(two_students)["student"] == "student-a"
    with pytest.raises(RelkitError, match="on node-7, the workspace .*/nowhere is not readable .* same path"):
        check_workspace(tmp_path / "nowhere", where="node-7")
    os.rename(two_students / "artifacts" / "student-a", two_students / "artifacts" / "moved")
    with pytest.raises(RelkitError, match=r"the active student's folder .*student-a is missing"):
        check_workspace(two_students)
    (two_students / ACTIVE_FILE).unlink()
    with pytest.raises(RelkitError, match="no student is active"):
        check_workspace(two_students)


def test_the_command_line_checks_before_starting_ray(shop):
    from typer.testing import CliRunner

    from relkit.cli import app

    shop.close()

    def fails(*args) -> str:
        result = CliRunner().invoke(app, ["serve", "-w", str(shop.path), *args], env={"COLUMNS": "300"})
        assert result.exit_code == 2, result.output
        return " ".join(result.output.split())

    assert fails("--replicas", "2") == "error: --ray-address, --replicas and --max-replicas go with --ray"
    assert fails("--ray", "--replicas", "2") == \
        f"error: no student is active in {shop.path.resolve()}: run `relkit promote NAME` first"
    assert "set an API key" in fails("--ray", "--host", "0.0.0.0")
    assert fails("--ray", "--replicas", "3", "--max-replicas", "2").endswith(
        "--max-replicas at least --replicas (got --replicas 3, --max-replicas 2)")
