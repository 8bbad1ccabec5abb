"""Audits of real run files and of relkit's own service on loopback, judged by a student and a teacher."""
import json
import math
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import ITEMS, free_port, level, make_shop, relkit, write_csv
from relkit import RelkitError, Workspace, import_file
from relkit.audit import Engine, allocate, audit, draw, history, make_judge, query_strata
from relkit.audit.core import MDE_FACTOR
from relkit.audit.judges import CACHE_TABLE
from relkit.serve import create_app
from test_serve import Server, serving_workspace

TITLES = {item_id: title for item_id, title, _ in ITEMS}


def queries_of(ws) -> dict[str, str]:
    return dict(ws.fetchall("SELECT query_id, query FROM queries ORDER BY query_id"))


def write_trec(path, ranking: dict[str, list[str]], tag="run"):
    with open(path, "w") as f:
        for qid, items in ranking.items():
            for rank, item in enumerate(items, start=1):
                f.write(f"{qid} Q0 {item} {rank} {100 - rank} {tag}\n")
    return path


def ndcg_by_hand(ws, judge: str, tops: dict[str, dict[str, list[str]]], k: int) -> dict[str, dict[str, float]]:
    """Each system's nDCG@k per query worked out here: a result's gain is the scale's gain of people's
    level where they judged it, else the expected gain under the judge's cached distribution; the
    ideal is the best k of every system's results; queries whose ideal is 0 have none."""
    gains = np.array(ws.scale.gains, dtype=float)
    people = {(q, i): gains[label - 1]
              for q, i, label in ws.fetchall("SELECT query_id, item_id, label FROM judgments")}
    judged = {(q, i): float(np.array(p) @ gains) for q, i, p in ws.fetchall(
        f"SELECT query_id, item_id, p FROM {CACHE_TABLE} WHERE judge = ?", [judge])}

    def gain(q, i):
        return people[q, i] if (q, i) in people else judged.get((q, i), 0.0)

    def dcg(values):
        return sum(g / math.log2(rank + 1) for rank, g in enumerate(values, start=1))

    out = {name: {} for name in tops}
    for q in next(iter(tops.values())):
        pooled = {i for top in tops.values() for i in top[q][:k]}
        ideal = dcg(sorted((gain(q, i) for i in pooled), reverse=True)[:k])
        for name, top in tops.items():
            if ideal > 0:
                out[name][q] = dcg([gain(q, i) for i in top[q][:k]]) / ideal
    return out


def bootstrap_by_hand(per_query: dict[str, float], seed: int = 0) -> tuple[float, float, float]:
    """The mean of the per-query values (queries in id order) and its 95% percentile interval over
    2000 resamples of the queries, drawn from one generator: an audit of a single stratum."""
    values = np.array([per_query[q] for q in sorted(per_query)])
    means = values[np.random.default_rng(seed).integers(0, len(values), size=(2000, len(values)))].mean(axis=1)
    return (values.mean(), *np.quantile(means, [0.025, 0.975]))


def by_rule(query: str, best_first: bool) -> list[str]:
    """Every item of the shop ordered by the rule's level for the query (ties by id)."""
    order = sorted(TITLES, key=lambda i: (-level(query, TITLES[i]) if best_first else level(query, TITLES[i]), i))
    return order[:10]


@pytest.fixture(scope="module")
def served_once(tmp_path_factory):
    return serving_workspace(make_shop(tmp_path_factory.mktemp("served")))


@pytest.fixture
def served(served_once, tmp_path):
    """A copy of the shop with students a (active, served), b and c; closed, as the service opens it
    read-only (built once, copied for each test, since audits write to it)."""
    return shutil.copytree(served_once, tmp_path / "served")


def test_two_run_files_judged_by_a_student_stored_and_cached(served, tmp_path):
    with Workspace.open(served) as ws:
        qs = queries_of(ws)
        good = write_trec(tmp_path / "good.trec", {q: by_rule(t, True) for q, t in qs.items()})
        # the same lists as a CSV keyed by query text, ranks given out of order
        rows = [[t, item, rank] for q, t in qs.items() for rank, item in reversed(list(enumerate(by_rule(t, False), 1)))]
        bad = write_csv(tmp_path / "bad.csv", ["query", "item_id", "rank"], rows)
        result = audit(ws, "student:a", runs=[f"bad={bad}", f"good={good}"], k=10, name="first")

        assert [s.name for s in result.systems] == ["bad", "good"]
        bad_s, good_s = result.systems
        assert result.sample.strata == dict.fromkeys(qs, "all")          # no engagement log: one stratum
        tops = {name: {q: by_rule(t, name == "good") for q, t in qs.items()} for name in ("bad", "good")}
        by_hand = ndcg_by_hand(ws, "student:a", tops, 10)
        for s in result.systems:
            assert (s.ndcg.estimate, s.ndcg.low, s.ndcg.high) == pytest.approx(bootstrap_by_hand(by_hand[s.name]),
                                                                               abs=1e-12)
            assert s.per_query == pytest.approx({q: round(v, 6) for q, v in by_hand[s.name].items()}, abs=1e-12)
            assert s.ndcg.n == len(by_hand[s.name]) and "stratified bootstrap, 2000 resamples" in s.ndcg.method
        assert good_s.ndcg.estimate > 0.9 > bad_s.ndcg.estimate
        assert good_s.share.estimate > bad_s.share.estimate            # share of results at level >= 2 (of 3)
        assert result.threshold == 2 and result.k == 10 and good_s.results == 10 * len(qs)
        c = result.comparison
        assert (c.a, c.b) == ("good", "bad")
        # the paired difference is of the per-query nDCG the audit keeps (6 decimals)
        diff = {q: good_s.per_query[q] - bad_s.per_query[q] for q in good_s.per_query}
        assert (c.difference.estimate, c.difference.low, c.difference.high) == pytest.approx(bootstrap_by_hand(diff),
                                                                                             abs=1e-12)
        d = np.array(list(diff.values()))
        assert c.standard_error == pytest.approx(np.std(d, ddof=1) / math.sqrt(len(d)), rel=1e-12)
        # z of 97.5% plus z of 80%: a two-sided test at 5% with 80% power
        assert MDE_FACTOR == pytest.approx(1.959964 + 0.841621, abs=1e-6)
        assert c.mde == pytest.approx(MDE_FACTOR * c.standard_error, rel=1e-12)
        assert c.mde_relative == pytest.approx(c.mde / bad_s.ndcg.estimate, rel=1e-12)
        # people's judgments stand in for the judge's where they exist, and the rest is judged once
        n = result.counts
        assert n.human > 0 and n.judge > 0 and n.human + n.judge + n.unjudged == n.pairs
        assert n.judged_now == n.judge and n.unjudged == 0
        human = ws.fetchone("SELECT count(*) FROM judgments")[0]
        assert n.human <= human
        assert ws.fetchone(f"SELECT count(*) FROM {CACHE_TABLE} WHERE judge = 'student:a'")[0] == n.judge

        again = audit(ws, "student:a", runs=[f"bad={bad}", f"good={good}"], k=10, name="second")
        assert again.counts.judged_now == 0 and again.counts.judge == n.judge
        assert again.systems[1].ndcg == good_s.ndcg

        judge_only = audit(ws, "student:a", runs=[f"bad={bad}", f"good={good}"], k=10, name="judge-only", human=False,
                           )
        assert judge_only.counts.human == 0 and judge_only.counts.judge == n.pairs
        assert judge_only.counts.judged_now == n.pairs - n.judge      # what people had judged is new to the judge
        (ws.path / "results" / "audit-judge-only.json").unlink()

        stored = {a["name"]: a for a in ws.results("audit")}
        assert set(stored) == {"first", "second"}
        assert stored["first"]["judge"] == "student:a" and stored["first"]["sample"]["queries"] == len(qs)
        g = good_s.ndcg
        assert stored["first"]["systems"][1]["ndcg"] == {"mean": g.estimate, "low": g.low, "high": g.high,
                                                         "queries": g.n}
        x = c.difference
        assert stored["first"]["comparison"]["difference"] == {"mean": x.estimate, "low": x.low, "high": x.high,
                                                               "queries": x.n}
        rows = history(ws, "ndcg", system="good").rows
        assert [r["name"] for r in rows] == ["first", "second"] and list(rows[0]["values"]) == ["good"]
        assert history(ws, "difference").rows[0]["values"]["good - bad"] == {
            "mean": c.difference.estimate, "low": c.difference.low, "high": c.difference.high,
            "queries": c.difference.n, "mde": c.mde}


def test_the_service_as_an_engine_beside_a_run_file_from_the_cli(served, tmp_path):
    with Workspace.open(served, read_only=True) as ws:
        qs = queries_of(ws)
    run = write_trec(tmp_path / "good.trec", {q: by_rule(t, True) for q, t in qs.items()})
    with Server(create_app(served, warm_queries=0)) as url:
        table = relkit("audit", "--run", f"rule={run}", "--engine", f"student={url}/v1/search", "--judge",
                       "student:b", "--sample", "12", "--k", "5", "--seed", "1", "--name", "cli", "-w", served)
        assert table.returncode == 0, table.stderr
    result = json.loads((served / "results" / "audit-cli.json").read_text())
    assert [s["name"] for s in result["systems"]] == ["rule", "student"]
    assert result["sample"]["queries"] == 12 and len(result["query_ids"]) == 12
    student = result["systems"][1]
    assert student["results"] == 12 * 5 and student["empty"] == 0 and student["source"].endswith("/v1/search")
    # the served student finds the query's own item: its nDCG is real, not a placeholder
    assert 0.5 < student["ndcg"]["mean"] <= 1.0
    assert result["comparison"]["a"] == "student" and result["comparison"]["mde"] > 0
    assert "ndcg@5 [95%]" in " ".join(table.stdout.split()) and "Minimum detectable effect" in table.stdout
    assert "stored as cli" in table.stdout
    hist = relkit("audit", "--history", "--system", "student", "--json", "-w", served)
    assert hist.returncode == 0, hist.stderr
    (row,) = json.loads(hist.stdout)
    assert row["name"] == "cli" and row["values"]["student"]["mean"] == pytest.approx(student["ndcg"]["mean"])


def test_a_get_engine_with_an_items_path(served, tmp_path):
    """A search engine of another kind: GET ?q=..., the ids at hits[].doc.id."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            q = parse_qs(urlsplit(self.path).query)["q"][0]
            body = json.dumps({"hits": [{"doc": {"id": i}} for i in by_rule(q, True)]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        engine = Engine("other", f"http://127.0.0.1:{server.server_port}/search?q={{query}}", "hits[].doc.id")
        with Workspace.open(served) as ws:
            result = audit(ws, "student:a", engines=[engine], k=10)
    finally:
        server.shutdown()
    assert result.systems[0].ndcg.estimate > 0.9 and result.comparison is None


def test_strata_by_the_engagement_log_and_neyman_allocation_from_a_pilot(served, tmp_path):
    with Workspace.open(served) as ws:
        qs = queries_of(ws)
        texts = sorted(qs.values())
        # impressions 1..24 for 24 queries; 8 queries are not in the log
        log = [[t, "red-chair", n + 1, "2025-01-01T00:00:00Z"] for n, t in enumerate(texts[:24])]
        import_file(ws, "engagement", write_csv(tmp_path / "log.csv", ["query", "item_id", "impressions", "timestamp"],
                                                log))
        strata = query_strata(ws, list(qs))
        counts = {h: sum(v == h for v in strata.values()) for h in set(strata.values())}
        assert counts == {"head": 8, "torso": 8, "tail": 8, "not in the log": 8}
        assert strata[next(q for q, t in qs.items() if t == texts[23])] == "head"

        sample = draw(strata, 16, "proportional", seed=2)
        assert sample.allocation == {"head": 4, "not in the log": 4, "tail": 4, "torso": 4}
        assert len(sample.query_ids) == 16 and draw(strata, 16, seed=2).query_ids == sample.query_ids

        run = write_trec(tmp_path / "good.trec", {q: by_rule(t, True) for q, t in qs.items()})
        mixed = write_trec(tmp_path / "mixed.trec", {q: by_rule(t, i % 2 == 0) for i, (q, t) in enumerate(qs.items())})
        pilot = audit(ws, "student:a", runs=[f"good={run}", f"mixed={mixed}"], sample=16, name="pilot",
                      )
        assert set(pilot.systems[0].strata) == set(counts) and set(pilot.spread) == set(counts)
        with pytest.raises(RelkitError, match="needs the spread of each stratum"):
            audit(ws, "student:a", runs=[f"good={run}"], sample=16, allocation="neyman")
        neyman = audit(ws, "student:a", runs=[f"good={run}", f"mixed={mixed}"], sample=16, allocation="neyman",
                       pilot="pilot")
        assert neyman.sample.method == "neyman" and sum(neyman.sample.allocation.values()) == 16
        assert neyman.sample.allocation == allocate(neyman.sample.population, 16, pilot.spread)


def test_allocation_follows_size_and_spread():
    assert allocate({"head": 10, "tail": 30}, 8) == {"head": 2, "tail": 6}
    assert allocate({"a": 50, "b": 50}, 20, {"a": 0.4, "b": 0.1}) == {"a": 16, "b": 4}
    assert allocate({"a": 3, "b": 100}, 50) == {"a": 2, "b": 48}
    assert allocate({"a": 3, "b": 10}, 12, {"a": 1.0, "b": 0.01}) == {"a": 3, "b": 9}   # never more than it has
    assert allocate({"a": 5, "b": 5, "c": 5}, 2) == {"a": 1, "b": 1, "c": 0}


def test_a_tiny_teacher_judges_and_a_retrained_one_judges_again(tmp_path):
    from tiny_models import build

    from relkit.teacher import TrainConfig, train_teacher

    base = build("bert", tmp_path / "models")
    with make_shop(tmp_path) as ws:
        config = TrainConfig(model=str(base), name="tiny", epochs=1, batch_size=16, max_length=32, prior="none")
        train_teacher(ws, config)
        qs = queries_of(ws)
        run = write_trec(tmp_path / "good.trec", {q: by_rule(t, True) for q, t in qs.items()})
        first = audit(ws, "teacher:tiny", runs=[str(run)], sample=10)
        assert first.systems[0].name == "good" and first.counts.judged_now == first.counts.judge > 0
        judge = make_judge("teacher:tiny", ws)
        cached = ws.fetchall(f"SELECT p FROM {CACHE_TABLE} WHERE judge = 'teacher:tiny' AND version = ?",
                             [judge.version])
        assert len(cached) == first.counts.judge and all(abs(sum(p) - 1) < 1e-5 for (p,) in cached)
        shutil.rmtree(ws.artifact_dir("teacher", "tiny"))                  # trained again under the same name
        train_teacher(ws, TrainConfig(model=str(base), name="tiny", epochs=1, batch_size=16, max_length=32,
                                      prior="none", seed=7), )
        assert make_judge("teacher:tiny", ws).version != judge.version
        again = audit(ws, "teacher:tiny", runs=[str(run)], sample=10)
        assert again.counts.judged_now == again.counts.judge


def test_bad_input_is_one_clear_line(served, tmp_path):
    with Workspace.open(served) as ws:
        qs = queries_of(ws)
        qid = next(iter(qs))
        ranks = write_csv(tmp_path / "ranks.csv", ["query_id", "item_id", "rank"],
                          [[qid, "red-chair", 1], [qid, "blue-chair", "second"]])
        with pytest.raises(RelkitError, match=r"ranks.csv, line 3, field 'rank': expected an integer rank, got 'second'"):
            audit(ws, "student:a", runs=[str(ranks)])
        trec = tmp_path / "unknown.trec"
        trec.write_text(f"{qid} Q0 red-chair 1 2.0 x\nnope Q0 red-chair 1 2.0 x\n")
        with pytest.raises(RelkitError, match=r"unknown.trec, line 2, field 'query_id': unknown query 'nope'"):
            audit(ws, "student:a", runs=[str(trec)])
        short = tmp_path / "short.trec"
        short.write_text(f"{qid} red-chair 1\n")
        with pytest.raises(RelkitError, match=r"short.trec, line 1: expected 6 whitespace-separated fields"):
            audit(ws, "student:a", runs=[str(short)])
        with pytest.raises(RelkitError, match="no student 'zzz'"):
            audit(ws, "student:zzz", runs=[str(trec)])
        with pytest.raises(RelkitError, match="nothing to audit"):
            audit(ws, "student:a")
        with pytest.raises(RelkitError, match="--judge must be KIND:NAME"):
            make_judge("oracle:x", ws)
        down = Engine("down", f"http://127.0.0.1:{free_port()}/v1/search", timeout=5)
        with pytest.raises(RelkitError, match=r"engine 'down' \(http://127.0.0.1:\d+/v1/search\), query '.+': "
                                              r"cannot reach the engine"):
            audit(ws, "student:a", engines=[down], sample=3)
        with pytest.raises(RelkitError, match=r"needs a \{query\} placeholder"):
            Engine("x", "http://127.0.0.1:1/search")
        assert ws.results("audit") == []          # nothing stored by a failed audit

    # the engine answers every query well but two: the second query (by id) fails, the third has no hits
    second, third = [qs[q] for q in sorted(qs)][1:3]
    replies = {second: (500, b"index unavailable"), third: (200, b'{"results": []}')}

    class Failing(BaseHTTPRequestHandler):
        def do_GET(self):
            query = parse_qs(urlsplit(self.path).query)["q"][0]
            status, body = replies.get(query, (200, b'{"hits": [{"id": "red-chair"}]}'))
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/s?q={{query}}"
        flaky = ("audit", "--engine", f"flaky={url}", "--items-path", "hits[].id", "--judge", "student:a", "-w", served)
        # queries are asked in id order, several at once; the first failing one in that order ends the audit
        out = relkit(*flaky)
        assert out.returncode == 2
        line = out.stderr.strip().splitlines()[-1]          # after the progress bar: the error, on one line
        assert line == (f"error: engine 'flaky' ({url}), query '{second}': HTTP 500 Internal Server Error: index "
                        f"unavailable")
        del replies[second]
        out = relkit(*flaky)
        assert out.returncode == 2
        assert out.stderr.strip().splitlines()[-1] == (f"error: engine 'flaky' ({url}), query '{third}': the reply has "
                                                       f"no 'hits' at 'hits[].id'")
        missing = relkit("audit", "--run", tmp_path / "none.trec", "--judge", "student:a", "-w", served)
        assert missing.returncode == 2 and "none.trec: no such run file" in missing.stderr
        judge = relkit("audit", "--run", str(ranks), "--judge", "judge:smol", "-w", served)
        assert judge.returncode == 2 and judge.stderr.startswith("error: no judge 'smol'")
        assert len(judge.stderr.strip().splitlines()) == 1
    finally:
        server.shutdown()


def test_an_llm_judge_judges_what_people_have_not(tmp_path):
    """judge:NAME: a local causal LM (a tiny Llama) reads each pair's prompt; its labels land in its own
    shards, and a second audit asks it nothing."""
    from tiny_models import build

    from relkit.judge import JudgeSpec, create_judge

    model = build("llama", tmp_path / "models")
    with make_shop(tmp_path) as ws:
        create_judge(ws, JudgeSpec(name="tiny", model=str(model), batch_size=8))
        qs = queries_of(ws)
        run = write_trec(tmp_path / "good.trec", {q: by_rule(t, True) for q, t in qs.items()})
        first = audit(ws, "judge:tiny", runs=[str(run)], sample=6, k=5)
        assert first.judge == "judge:tiny" and first.counts.judge > 0
        assert first.counts.judge == first.counts.judged_now and first.counts.unjudged == 0
        queries = first.sample.query_ids
        by_hand = ndcg_by_hand(ws, "judge:tiny", {"good": {q: by_rule(qs[q], True) for q in queries}}, 5)["good"]
        ndcg = first.systems[0].ndcg
        assert (ndcg.estimate, ndcg.low, ndcg.high) == pytest.approx(bootstrap_by_hand(by_hand), abs=1e-12)
        assert first.ndcg_queries == len(by_hand) > 0
        shards = list((ws.path / "labels" / "judge-tiny").glob("shard-*.parquet"))
        assert shards and sum(pq.read_metadata(f).num_rows for f in shards) == first.counts.judge
        again = audit(ws, "judge:tiny", runs=[str(run)], sample=6, k=5)
        assert again.counts.judged_now == 0 and again.systems[0].ndcg == first.systems[0].ndcg


def test_strata_by_a_column_of_the_queries_file(ws, tmp_path):
    import_file(ws, "queries", write_csv(tmp_path / "q.csv", ["query_id", "query", "team"],
                                         [["q1", "red chair", "home"], ["q2", "blue lamp", "garden"],
                                          ["q3", "saw", ""], ["q4", "rug", "home"]]))
    assert query_strata(ws, ["q1", "q2", "q3", "q4"], "team") == {"q1": "home", "q2": "garden", "q3": "(none)",
                                                                  "q4": "home"}
    assert set(query_strata(ws, ["q1", "q2"]).values()) == {"all"}          # no engagement log: one stratum
    with pytest.raises(RelkitError, match="--strata nope: no audited query has a value for 'nope'"):
        query_strata(ws, ["q1"], "nope")
    sample = draw(query_strata(ws, ["q1", "q2", "q3", "q4"], "team"), 3, by="team")
    assert sample.allocation == {"(none)": 1, "garden": 1, "home": 1} and sample.weights()["home"] == 0.5
