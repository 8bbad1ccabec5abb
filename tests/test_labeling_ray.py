"""`relkit label --engine ray` on a real two-node Ray cluster (two raylets on this machine): the
labeling actors start on the second node, the node is removed mid-run, and the run still labels
every pending pair exactly once."""
import subprocess
import sys
import time

import pytest

from conftest import ROOT, write_csv
from relkit import LabelScale, SplitConfig, Workspace, import_file, split_queries
from relkit.teacher import Teacher, TeacherMeta, TextTemplate, TrainConfig
from relkit.teacher.model import TEMPLATES
from relkit.teacher.train import load_base
from tiny_models import build

ray = pytest.importorskip("ray")

COLORS = ["red", "blue", "green", "black", "white", "grey"]
THINGS = ["chair", "table", "lamp", "hose", "drill", "door", "saw", "rug"]
PER_QUERY = 12


@pytest.fixture
def two_node_ws(tmp_path):
    """A workspace with an untrained tiny teacher and 576 candidate pairs of 48 queries."""
    with Workspace.create(tmp_path / "ws", LabelScale.default(3)) as ws:
        items = [[f"{c}-{t}", f"{c} {t}"] for c in COLORS for t in THINGS]
        import_file(ws, "items", write_csv(tmp_path / "i.csv", ["item_id", "title"], items))
        judgments = [[f"{c} {t}", f"{c}-{t}", "3"] for c in COLORS for t in THINGS]
        import_file(ws, "judgments", write_csv(tmp_path / "j.csv", ["query", "item_id", "label"], judgments))
        split_queries(ws, SplitConfig(seed=0, dev=0.25, test=0.0))
        ids = dict(ws.fetchall("SELECT query, query_id FROM queries"))
        pairs = [[ids[f"{c} {t}"], items[(n + j) % len(items)][0]]
                 for n, (c, t) in enumerate((c, t) for c in COLORS for t in THINGS) for j in range(PER_QUERY)]
        import_file(ws, "pairs", write_csv(tmp_path / "p.csv", ["query_id", "item_id"], pairs))
        model, tokenizer, family, _ = load_base(TrainConfig(model=str(build("bert", tmp_path))), 3, "cpu")
        meta = TeacherMeta(base_model="bert", family=family, scale=ws.scale, max_length=32,
                           template=TextTemplate(query_prefix=TEMPLATES[family][0], item_prefix=TEMPLATES[family][1]))
        Teacher(model, tokenizer, meta).save(ws.artifacts / "teacher-t")   # untrained: labels need no skill here
    return tmp_path / "ws"


def scorers() -> list[dict]:
    """The labeling actors the cluster knows (their node, state and restarts), from the GCS."""
    from ray._private.state import actors

    return [a for a in actors().values() if a["ActorClassName"] == "RayScorer"]


def test_label_survives_losing_the_node_its_actors_run_on(two_node_ws):
    import pyarrow.parquet as pq
    from ray.cluster_utils import Cluster

    path = two_node_ws
    with Workspace.open(path) as ws:
        pending = set(ws.fetchall("SELECT query_id, item_id FROM pairs"))
    assert len(pending) == 48 * PER_QUERY
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4}})
    process = None
    try:
        second = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        head_id, second_id = cluster.head_node.node_id, second.node_id

        @ray.remote(num_cpus=1)
        class Hold:    # holds the head's one CPU, so the labeling actors can only start on the second node
            def node(self):
                return ray.get_runtime_context().get_node_id()

        hold = Hold.remote()
        assert ray.get(hold.node.remote()) == head_id
        shards = path / "labels" / "t"
        process = subprocess.Popen(
            [sys.executable, "-m", "relkit", "label", "--teacher", "t", "--engine", "ray", "--ray-address",
             cluster.address, "--ray-actors", "2", "--shard-size", "2", "--batch-size", "2", "-w", str(path)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and len(list(shards.glob("shard-*.parquet"))) < 2:
            assert process.poll() is None, process.communicate()
            time.sleep(0.01)
        placed = {a["Address"]["NodeID"] for a in scorers() if a["State"] == "ALIVE"}
        ray.kill(hold)
        cluster.remove_node(second)
        written_before = len(list(shards.glob("shard-*.parquet")))
        assert placed == {second_id}, "the labeling actors were to start on the second node"
        assert 2 <= written_before < len(pending) // 2, "the node was to be removed mid-run"
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert f"labeled {len(pending)} of {len(pending)} pending pairs" in out
        # the head has room for one of the two: it took over the blocks of both
        assert any(a["NumRestarts"] >= 1 and a["Address"]["NodeID"] == head_id for a in scorers())
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        ray.shutdown()
        cluster.shutdown()
    files = sorted(shards.glob("shard-*.parquet"))
    rows = [(q, i) for f in files for q, i in zip(*pq.read_table(f, columns=["query_id", "item_id"]).columns)]
    rows = [(q.as_py(), i.as_py()) for q, i in rows]
    assert len(files) == len(pending) // 2 and not list(shards.glob("*.tmp"))
    assert len(rows) == len(set(rows)) == len(pending) and set(rows) == pending
