"""Audits of real run files and of relkit's own service on loopback, judged by a student and a teacher."""
import csv
import json
import math
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import ITEMS, free_port, kurtosis_df, level, make_shop, relkit, write_csv
from relkit import RelkitError, Workspace, import_file
from relkit.audit import Engine, allocate, audit, draw, history, make_judge, query_strata
from relkit.audit.core import MDE_FACTOR
from relkit.audit.judges import CACHE_TABLE
from relkit.serve import create_app
from test_serve import Server, serving_workspace

TITLES = {item_id: title for item_id, title, _ in ITEMS}


def queries_of(ws) -> dict[str, str]:
    return dict(ws.fetchall("SELECT query_id, query FROM queries ORDER BY query_id"))


def import_engagement_log(ws, texts: list[str], tmp_path) -> None:
    """An engagement log of the first 24 `texts`, with impressions 1..24; the other queries are not in it."""
    log = [[t, "red-chair", n + 1, "2025-01-01T00:00:00Z"] for n, t in enumerate(texts[:24])]
    import_file(ws, "engagement", write_csv(tmp_path / "log.csv", ["query", "item_id", "impressions", "timestamp"], log))


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
        import_engagement_log(ws, texts, tmp_path)
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


# --- a people slice: people judge a random sample of the audited results, and the audit combines -----

def fill_by_rule(path, qs) -> int:
    """Fill the label column of a slice's CSV as people would: the rule's level of each pair."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["label"] == "" for r in rows)
    assert all(r["query"] == qs[r["query_id"]] and r["title"] == TITLES[r["item_id"]] for r in rows)
    for r in rows:
        r["label"] = str(level(r["query"], r["title"]))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def ppi_by_hand(y, fl, fu) -> tuple[float, float, float]:
    """PPI++ as its paper defines it: lambda = Cov(y, f) / ((1 + n/N) Var(f)) (the covariance over the
    slice, over n; the variance over every query), clipped to [0, 1]; the estimate from ppi-python;
    the standard error the jackknife's over the slice (each query left out, lambda tuned again without
    it: (n - 1) / n x the sum of squared deviations of those estimates) plus lambda^2 Var(f_unlabeled) / N."""
    from ppi_py import ppi_mean_pointestimate

    y, fl, fu = (np.asarray(a, dtype=float) for a in (y, fl, fu))

    def point(y, fl):
        n, big_n = len(y), len(fu)
        spread = np.var(np.r_[fl, fu], ddof=1)
        # a judge that says the same of every query says nothing: lambda 0 (ppi-python divides by 0 there)
        lam = np.clip(np.mean((y - y.mean()) * (fl - fl.mean())) / ((1 + n / big_n) * spread), 0, 1) if spread else 0.0
        return lam * fu.mean() + (y - lam * fl).mean(), float(lam), spread

    estimate, lam, spread = point(y, fl)
    if spread:
        assert estimate == pytest.approx(ppi_mean_pointestimate(y, fl, fu)[0], rel=1e-10)
    n = len(y)
    left = np.array([point(np.delete(y, i), np.delete(fl, i))[0] for i in range(n)])
    var = (n - 1) / n * np.sum((left - left.mean()) ** 2) + lam ** 2 * fu.var(ddof=1) / len(fu)
    return estimate, float(np.sqrt(var)), lam


def residual_df(y, fl, lam: float) -> float:
    """The robust interval's degrees of freedom: n - 1, lowered for the kurtosis of y - lambda f."""
    r = np.asarray(y, dtype=float) - lam * np.asarray(fl, dtype=float)
    return kurtosis_df(r - r.mean(), len(r) - 1)


def assert_interval(stored: dict, mean: float, se: float, df: float):
    """A Student t interval with `df` degrees of freedom."""
    from scipy.stats import t

    z = t.ppf(0.975, df)
    assert (stored["mean"], stored["low"], stored["high"], stored["standard_error"]) == pytest.approx(
        (mean, mean - z * se, mean + z * se, se), rel=1e-9, abs=1e-12)
    assert stored["width"] == pytest.approx(2 * z * se, rel=1e-9)


def test_a_people_slice_filled_as_a_csv_then_combined(served, tmp_path):
    with Workspace.open(served) as ws:
        qs = queries_of(ws)
        tops = {"good": {q: by_rule(t, True) for q, t in qs.items()},
                "mixed": {q: by_rule(t, i % 2 == 0) for i, (q, t) in enumerate(sorted(qs.items()))}}
        runs = [f"{name}={write_trec(tmp_path / f'{name}.trec', top)}" for name, top in tops.items()]
        before = {(q, i): label for q, i, label in ws.fetchall("SELECT query_id, item_id, label FROM judgments")}
        result = audit(ws, "student:a", runs=runs, k=10, name="pilot", people=60, seed=3)
        s = result.people
        pool = {q: list(dict.fromkeys(tops["good"][q] + tops["mixed"][q])) for q in qs}
        unjudged = {q: [(q, i) for i in pool[q] if (q, i) not in before] for q in qs}
        # about 60 results: as many queries as 60 results take at the audit's unjudged results per query
        per_query = sum(map(len, unjudged.values())) / len(qs)
        assert s.open_per_query == pytest.approx(per_query) and len(s.query_ids) == round(60 / per_query)
        assert s.method == "simple" and set(s.query_ids) < set(qs) and s.seed == 3
        # the members: every result of the slice's queries that no person had judged, query by query
        assert s.pairs == [p for q in s.query_ids for p in unjudged[q]]
        assert s.known == sum(len(pool[q]) - len(unjudged[q]) for q in s.query_ids) > 0
        assert ws.fetchall("SELECT query_id, item_id FROM audit_slice WHERE audit = 'pilot' ORDER BY position") == \
            [tuple(p) for p in s.pairs]
        stored = {a["name"]: a for a in ws.results("audit")}["pilot"]
        assert stored["people"] == json.loads(json.dumps(s.to_dict()))         # the design, kept with the audit
        judge_view = ndcg_by_hand(ws, "student:a", tops, 10)           # the audit's own labels, before people's
    assert fill_by_rule(s.csv, qs) == len(s.pairs)
    imported = relkit("import", "judgments", s.csv, "-w", served)
    assert imported.returncode == 0, imported.stderr

    combined = relkit("audit", "--combine", "pilot", "--json", "-w", served)
    assert combined.returncode == 0, combined.stderr
    out = json.loads(combined.stdout)
    with Workspace.open(served) as ws:
        on_slice = {n: {q: top[q] for q in s.query_ids} for n, top in tops.items()}
        people_view = ndcg_by_hand(ws, "student:a", on_slice, 10)
        stored = {a["name"]: a for a in ws.results("audit")}["pilot"]
        gains = np.array(ws.scale.gains, dtype=float)
        cached = {(q, i): np.array(p) for q, i, p in ws.fetchall(
            f"SELECT query_id, item_id, p FROM {CACHE_TABLE} WHERE judge = 'student:a'")}
    assert stored["ppi"] == out and out["slice"] == {"queries": len(s.query_ids), "complete": len(s.query_ids),
                                                     "results": len(s.pairs), "judged": len(s.pairs)}
    rest = [q for q in sorted(qs) if q not in s.query_ids]

    def split(view_people, view_judge):
        return ([view_people[q] for q in s.query_ids], [view_judge[q] for q in s.query_ids],
                [view_judge[q] for q in rest])

    systems = {x["name"]: x for x in out["systems"]}
    for name in tops:
        y, fl, fu = split(people_view[name], judge_view[name])
        mean, se, lam = ppi_by_hand(y, fl, fu)
        assert_interval(systems[name]["ndcg"]["ppi"], mean, se, residual_df(y, fl, lam))
        assert systems[name]["ndcg"]["ppi"]["lambda"] == pytest.approx(lam, rel=1e-9)
        assert_interval(systems[name]["ndcg"]["people"], np.mean(y), np.std(y, ddof=1) / np.sqrt(len(y)),
                        residual_df(y, fl, 0.0))
        f = np.r_[fl, fu]
        assert_interval(systems[name]["ndcg"]["judge"], f.mean(), f.std(ddof=1) / np.sqrt(len(f)),
                        residual_df(f, f, 0.0))
        # people's share at level >= 2 of the top 10 on the slice is the rule's
        share = [np.mean([level(qs[q], TITLES[i]) >= 2 for i in tops[name][q]]) for q in s.query_ids]
        assert systems[name]["share"]["people"]["mean"] == pytest.approx(np.mean(share), rel=1e-12)
    # the paired difference, mixed - good, as the audit's comparison
    (c,) = out["comparisons"]
    assert (c["a"], c["b"]) == ("mixed", "good")
    diff = {who: {q: view["mixed"][q] - view["good"][q] for q in view["good"]}
            for who, view in (("people", people_view), ("judge", judge_view))}
    y, fl, fu = split(diff["people"], diff["judge"])
    mean, se, lam = ppi_by_hand(y, fl, fu)
    assert_interval(c["ndcg"]["ppi"], mean, se, residual_df(y, fl, lam))
    assert c["ndcg"]["ppi"]["mde"] == pytest.approx(MDE_FACTOR * se, rel=1e-9)
    from scipy.stats import t

    assert c["verdicts"]["ppi"] == ("good better" if mean + t.ppf(0.975, len(y) - 1) * se < 0 else "no difference")
    assert c["agree"] == (c["verdicts"]["judge"] == c["verdicts"]["ppi"])
    # what planning needs: the per-query variances and covariance of people's and the judge's differences
    assert out["plan"]["var_people"] == pytest.approx(np.var(y, ddof=1), rel=1e-9)
    assert out["plan"]["var_judge"] == pytest.approx(np.var(np.r_[fl, fu], ddof=1), rel=1e-9)
    bound = np.sqrt(np.var(y, ddof=1) * np.var(np.r_[fl, fu], ddof=1))     # a covariance is at most that
    assert out["plan"]["covariance"] == pytest.approx(np.clip(np.cov(y, fl, ddof=1)[0, 1], -bound, bound), rel=1e-9)
    # the judge's bias on the slice: its expected gain minus people's (the rule's), share relevant it adds
    proba = np.stack([cached[p] for p in s.pairs])
    rule = np.array([level(qs[q], TITLES[i]) for q, i in s.pairs])
    (everything,) = out["bias"]["rows"]
    assert everything["results"] == len(s.pairs)
    assert everything["gain_difference"] == pytest.approx(np.mean(proba @ gains - gains[rule - 1]), rel=1e-9)
    assert everything["leniency"] == pytest.approx(np.mean(proba[:, 1:].sum(axis=1) * (rule < 2)), rel=1e-9)
    assert everything["severity"] == pytest.approx(np.mean(proba[:, 0] * (rule >= 2)), rel=1e-9)
    confusion = np.zeros((3, 3), dtype=int)
    for r, p in zip(rule, proba):
        confusion[r - 1, p.argmax()] += 1
    assert out["bias"]["confusion"] == confusion.tolist()

    # the same, as a table, and in the report
    shown = relkit("audit", "--combine", "pilot", "-w", served)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "judge only [95%]" in text and "PPI++ [95%]" in text and "leniency" in text
    assert f"{systems['good']['ndcg']['ppi']['mean']:.4f}" in text
    from relkit.report.data import build
    from relkit.report.page import render
    from relkit.systems import make_system

    with Workspace.open(served) as ws:
        html = render(build(ws, [make_system("student:a", ws)]))
    section = html[html.index('id="audits"'):html.index('id="about"')]
    assert "Judge only, people only and combined (PPI++)" in section
    ppi_good = systems["good"]["ndcg"]["ppi"]
    assert f"<td>{ppi_good['mean']:.4f}</td><td>[{ppi_good['low']:.4f}, {ppi_good['high']:.4f}]</td>" in section

    # planning from this pilot, both knobs: queries audited and those people judge
    planned = relkit("audit", "--plan-mde", "0.05", "--pilot", "pilot", "--json", "-w", served)
    assert planned.returncode == 0, planned.stderr
    p = json.loads(planned.stdout)
    v, vf, cov = out["plan"]["var_people"], out["plan"]["var_judge"], out["plan"]["covariance"]
    alone = max(2, math.ceil((MDE_FACTOR / 0.05) ** 2 * v))
    assert p["people_only"] == alone and [r["queries"] for r in p["rows"]] == [alone * m for m in (1, 2, 4, 8, 16)]
    for row in p["rows"]:
        big_q = row["queries"]

        def mde(n):
            lam = min(max(cov * (big_q - n) / (vf * big_q), 0.0), 1.0)
            var = (lam ** 2 * vf / (big_q - n) if n < big_q else 0.0) + (v - 2 * lam * cov + lam ** 2 * vf) / n
            return MDE_FACTOR * math.sqrt(var)

        n = next(n for n in range(2, big_q + 1) if mde(n) <= 0.05)
        assert (row["people_queries"], row["mde"]) == (n, pytest.approx(mde(n), rel=1e-9))
        assert row["people_results"] == round(n * per_query) and row["judge_results"] == round(big_q * per_query)
    table = relkit("audit", "--plan-mde", "0.05", "--pilot", "pilot", "-w", served)
    assert table.returncode == 0 and "judged by people" in table.stdout


def test_a_people_slice_served_first_by_the_annotation_campaign(served, tmp_path):
    """`relkit annotate` serves the slice first, in its order; two people on one pair: the studio's
    resolution (median: the lower of two) is the label the audit combines."""
    from relkit.annotation.state import AppConfig, prepare
    from relkit.audit import combine
    from relkit.audit.people import people_values

    with Workspace.open(served) as ws:
        qs = queries_of(ws)
        run = write_trec(tmp_path / "good.trec", {q: by_rule(t, True) for q, t in qs.items()})
        mixed = write_trec(tmp_path / "mixed.trec", {q: by_rule(t, i % 3 == 0) for i, (q, t) in enumerate(qs.items())})
        s = audit(ws, "student:a", runs=[f"good={run}", f"mixed={mixed}"], k=5, name="annotated", people=25).people
    # the workspace has no candidate pairs for the queue's strategy: the slice alone is the campaign
    prepared = prepare(served, AppConfig(weights={"diverse": 1.0}, overlap=0.0, resolve="median"))
    campaign = prepared.campaign
    try:
        assert [p.key for p in campaign.pairs] == s.pairs
        assert [p.key for p in campaign.hand_out("ana")] == s.pairs[:2]
        for q, i in s.pairs:
            campaign.record("ana", "judge", q, i, label=level(qs[q], TITLES[i]), seconds=2.0)
        for q, i in s.pairs[:3]:
            campaign.record("bob", "judge", q, i, label=1, seconds=2.0)
    finally:
        prepared.journal.close()
    with Workspace.open(served) as ws:
        from relkit.annotation.store import merge

        merge(ws)
        got = people_values(ws, s, 5, 2)
        assert got.complete == s.query_ids
        assert [got.labels[p] for p in s.pairs[:4]] == [1, 1, 1, level(qs[s.pairs[3][0]], TITLES[s.pairs[3][1]])]
        result = combine(ws, "annotated")
        assert result.judged == result.members == len(s.pairs) and result.complete == len(s.query_ids)
    # judged now, the slice is handed to no one again (each pair needs one annotator here)
    again = prepare(served, AppConfig(weights={"diverse": 1.0}, overlap=0.0, resolve="median"))
    try:
        assert [p.key for p in again.campaign.pairs] == s.pairs
        assert again.campaign.hand_out("ana") == [] and again.campaign.hand_out("cy") == []
    finally:
        again.journal.close()


class ColorJudge:
    """A judge that looks at the color alone: level 3 when the item has the query's color, else 1
    (harsh on the right thing in another color)."""
    name, version = "rule:color", "1"

    def judge(self, ws, pairs):
        texts = dict(ws.fetchall("SELECT query_id, query FROM queries"))
        out = np.zeros((len(pairs), 3))
        for n, (q, i) in enumerate(pairs):
            out[n, 2 if texts[q].split()[0] == TITLES[i].split()[0] else 0] = 1.0
        return out


def test_three_run_files_ranked_by_a_color_judge_and_by_people_from_qrels(served, tmp_path):
    from scipy.stats import kendalltau

    from relkit.audit import combine, read_run, run_audit

    def first(query, key):            # items sharing the query's color (key 0) or thing (key 1) first
        word = query.split()[key]
        return sorted(TITLES, key=lambda i: (word not in TITLES[i].split(), i))[:10]

    with Workspace.open(served) as ws:
        qs = queries_of(ws)
        tops = {"good": {q: by_rule(t, True) for q, t in qs.items()},
                "color": {q: first(t, 0) for q, t in qs.items()}, "thing": {q: first(t, 1) for q, t in qs.items()}}
        lists = [read_run(write_trec(tmp_path / f"{n}.trec", top), n, set(qs), {}) for n, top in tops.items()]
        sample = draw(query_strata(ws, sorted(qs)), None)
        result = run_audit(ws, lists, ColorJudge(), sample, k=5, name="three", people=70)
        s = result.people
        judge_view = ndcg_by_hand(ws, "rule:color", {n: {q: top[q][:5] for q in qs} for n, top in tops.items()}, 5)
        # people judge the slice elsewhere and send TREC qrels: grade r is level r + 1
        qrels = tmp_path / "slice.qrels"
        qrels.write_text("".join(f"{q} 0 {i} {level(qs[q], TITLES[i]) - 1}\n" for q, i in s.pairs))
    imported = relkit("import", "judgments", qrels, "-w", served)
    assert imported.returncode == 0, imported.stderr
    assert f"{len(s.pairs):,} judgments added" in imported.stdout
    with Workspace.open(served) as ws:
        assert {(q, i): label for q, i, label in ws.fetchall("SELECT query_id, item_id, label FROM judgments")
                if (q, i) in set(s.pairs)} == {(q, i): level(qs[q], TITLES[i]) for q, i in s.pairs}
        people_view = ndcg_by_hand(ws, "rule:color", {n: {q: top[q][:5] for q in s.query_ids}
                                                      for n, top in tops.items()}, 5)
        out = combine(ws, "three")
        gains = np.array(ws.scale.gains, dtype=float)
    rest = [q for q in sorted(qs) if q not in s.query_ids]
    judge_means, ppi_means = [], []
    for name in tops:
        judge_means.append(np.mean([judge_view[name][q] for q in qs]))
        on, off = [judge_view[name][q] for q in s.query_ids], [judge_view[name][q] for q in rest]
        ppi_means.append(ppi_by_hand([people_view[name][q] for q in s.query_ids], on, off)[0])
        assert out.systems[name]["ndcg"].judge.estimate == pytest.approx(judge_means[-1], rel=1e-12)
        assert out.systems[name]["ndcg"].ppi.estimate == pytest.approx(ppi_means[-1], rel=1e-9)
    tau = kendalltau(judge_means, ppi_means)
    assert (out.ranking.tau, out.ranking.p_value) == pytest.approx((tau.statistic, tau.pvalue), rel=1e-12)
    order = list(tops)
    assert out.ranking.judge == sorted(order, key=lambda n: -judge_means[order.index(n)])
    assert out.ranking.people == sorted(order, key=lambda n: -ppi_means[order.index(n)])
    # the color judge calls every item of the query's color relevant: it ranks 'color' first, people do not
    assert out.ranking.judge[0] == "color" and out.ranking.people[0] == "good" and out.ranking.tau < 1
    assert [(c.a, c.b) for c in out.comparisons] == [("color", "good"), ("thing", "good"), ("thing", "color")]
    for c in out.comparisons:
        for who, v in c.verdicts().items():
            i = getattr(c.ndcg, who).interval
            assert v == (f"{c.a} better" if i.low > 0 else f"{c.b} better" if i.high < 0 else "no difference")
        assert c.agree == (c.verdicts()["judge"] == c.verdicts()["ppi"])
    # its bias: never lenient at level 2 (an item of the query's color is at least level 2), severe on
    # the right thing in another color
    judge_level = np.array([3 if qs[q].split()[0] == TITLES[i].split()[0] else 1 for q, i in s.pairs])
    rule = np.array([level(qs[q], TITLES[i]) for q, i in s.pairs])
    everything = out.bias.rows[-1]
    assert everything["leniency"] == 0.0
    assert everything["severity"] == pytest.approx(np.mean((judge_level == 1) & (rule >= 2)), rel=1e-12)
    assert everything["gain_difference"] == pytest.approx(np.mean(gains[judge_level - 1] - gains[rule - 1]), rel=1e-12)


def test_qrels_and_slice_errors_are_one_clear_line(served, tmp_path):
    from relkit.audit import combine

    with Workspace.open(served) as ws:
        qid = next(iter(queries_of(ws)))
        bad = tmp_path / "bad.qrels"
        bad.write_text(f"{qid} 0 red-chair 1\n{qid} 0 blue-chair 3\n")
        with pytest.raises(RelkitError, match=r"bad.qrels, line 2, field 'label': relevance '3' is not a grade 0..2"):
            import_file(ws, "judgments", bad)
        short = tmp_path / "short.txt"
        short.write_text(f"{qid} red-chair 1\n")
        with pytest.raises(RelkitError, match="short.txt, line 1: expected 4 whitespace-separated fields"):
            import_file(ws, "judgments", short)
        run = write_trec(tmp_path / "good.trec", {q: by_rule(t, True) for q, t in queries_of(ws).items()})
        audit(ws, "student:a", runs=[str(run)], k=5, name="plain")
        with pytest.raises(RelkitError, match="audit 'plain' has no people slice: run it with --people N"):
            combine(ws, "plain")
        with pytest.raises(RelkitError, match="no stored audit 'nope' to combine"):
            combine(ws, "nope")
        audit(ws, "student:a", runs=[str(run)], k=5, name="waiting", people=20)
        with pytest.raises(RelkitError, match=r"people have judged every result of 0 of the slice's \d+ queries"):
            combine(ws, "waiting")
    out = relkit("audit", "--plan-mde", "0.05", "--pilot", "waiting", "-w", served)
    assert out.returncode == 2 and "audit 'waiting' is not combined with people's judgments" in out.stderr


def test_a_stratified_slice_and_its_stratified_estimate(served, tmp_path):
    """With strata (the engagement log's head, torso, tail and the queries it lacks), the slice is drawn
    in each, and the estimate is the strata's PPI++ estimates weighted by their share, one lambda for all."""
    from relkit.audit import combine

    with Workspace.open(served) as ws:
        qs = queries_of(ws)
        texts = sorted(qs.values())
        import_engagement_log(ws, texts, tmp_path)
        tops = {"good": {q: by_rule(t, True) for q, t in qs.items()}}
        run = write_trec(tmp_path / "good.trec", tops["good"])
        s = audit(ws, "student:a", runs=[f"good={run}"], k=10, name="strata", people=90, seed=1).people
        strata = query_strata(ws, list(qs))
        assert s.method == "stratified" and s.allocation == allocate({h: 8 for h in set(strata.values())},
                                                                     len(s.query_ids))
        assert all(sum(strata[q] == h for q in s.query_ids) == n >= 2 for h, n in s.allocation.items())
        judge_view = ndcg_by_hand(ws, "student:a", tops, 10)["good"]
        fill_by_rule(s.csv, qs)
        import_file(ws, "judgments", s.csv)
        people_view = ndcg_by_hand(ws, "student:a", {"good": {q: tops["good"][q] for q in s.query_ids}}, 10)["good"]
        est = combine(ws, "strata").systems["good"]["ndcg"].ppi
    parts = {}
    for h in sorted(set(strata.values())):           # every stratum has 8 of the 32 queries: weight 1/4
        on = [q for q in s.query_ids if strata[q] == h]
        off = [q for q in sorted(qs) if strata[q] == h and q not in s.query_ids]
        parts[h] = (np.array([people_view[q] for q in on]), np.array([judge_view[q] for q in on]),
                    np.array([judge_view[q] for q in off]))
    top = sum(np.mean((y - y.mean()) * (fl - fl.mean())) / len(y) for y, fl, _ in parts.values())
    bottom = sum(np.var(np.r_[fl, fu], ddof=1) * (1 / len(fu) + 1 / len(y)) for y, fl, fu in parts.values())
    lam = float(np.clip(top / bottom, 0, 1))              # the weights (1/4)^2 cancel
    mean = sum(0.25 * (lam * fu.mean() + (y - lam * fl).mean()) for y, fl, fu in parts.values())
    var = sum(0.0625 * (lam ** 2 * fu.var(ddof=1) / len(fu) + (y - lam * fl).var(ddof=1) / len(y))
              for y, fl, fu in parts.values())
    assert est.lam == pytest.approx(lam, rel=1e-9)
    assert (est.estimate, est.standard_error) == pytest.approx((mean, math.sqrt(var)), rel=1e-9)
    assert "4 strata weighted by their share" in est.interval.method
