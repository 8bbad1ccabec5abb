import json

import numpy as np
import pytest

from conftest import write_csv
from relkit import (JudgedPairs, Prediction, RelkitError, evaluate, import_file, load_judged_pairs,
                    make_system, split_queries)
from relkit.evaluate import paired_bootstrap
from relkit.baselines import EmbeddingSystem


class Oracle:
    """Knows the true level of every pair: a real System, used to check the pipeline end to end."""

    name = "oracle"

    def __init__(self, k):
        self.k = k

    def predict(self, pairs: JudgedPairs) -> Prediction:
        return Prediction(proba=np.eye(self.k)[pairs.labels - 1])


class Reversed:
    name = "reversed"

    def predict(self, pairs: JudgedPairs) -> Prediction:
        return Prediction(scores=-pairs.labels.astype(float))


@pytest.fixture
def judged(tmp_path, ws3):
    rows = [["red chair", "Red wooden chair", "A red chair for the garden", "3"],
            ["red chair", "Blue garden hose", "Fifty feet of hose", "1"],
            ["red chair", "Red paint", "A gallon of red paint", "2"],
            ["garden hose", "Blue garden hose", "Fifty feet of hose", "3"],
            ["garden hose", "Red wooden chair", "A red chair for the garden", "1"],
            ["garden hose", "Hose reel", "Winds up cord", "2"]]
    import_file(ws3, "judgments", write_csv(tmp_path / "j.csv", ["query", "title", "description", "label"], rows),
                split="test")
    extra = write_csv(tmp_path / "items.csv", ["item_id", "title"], [[f"x{i}", f"filler product {i}"] for i in range(20)])
    import_file(ws3, "items", extra)
    split_queries(ws3)
    return ws3


def test_oracle_is_perfect_and_reversed_is_not(judged):
    report = evaluate(judged, [Oracle(3), Reversed()], split="test")
    assert (report.queries, report.pairs, report.ranked_queries) == (2, 6, 2)
    oracle, rev = (r.metrics for r in report.results)
    assert oracle["accuracy"] == oracle["qwk"] == oracle["macro_f1"] == oracle["ndcg@10"] == 1.0
    assert oracle["rmse"] == 0.0 and oracle["auroc@2"] == oracle["auroc@3"] == 1.0
    assert rev["accuracy"] is None and rev["rmse"] is None  # a plain score has no levels
    assert rev["auroc@3"] == 0.0 and rev["ndcg@10"] < 0.6
    assert report.to_dict()["systems"][1]["metrics"]["accuracy"] is None


def test_each_system_is_compared_with_the_first_per_query(judged):
    report = evaluate(judged, [Oracle(3), Reversed(), Oracle(3)], split="test")
    first, rev, same = report.results
    assert first.vs_first is None
    # reversed is worse on both queries: every resample of the two queries is below zero
    assert rev.vs_first.n == 2 and rev.vs_first.high < 0
    assert rev.vs_first.estimate == pytest.approx(rev.metrics["ndcg@10"] - 1.0)
    assert rev.vs_first.method == "paired bootstrap, 2000 resamples over queries"
    assert (same.vs_first.estimate, same.vs_first.low, same.vs_first.high) == (0.0, 0.0, 0.0)
    v = rev.vs_first
    assert report.to_dict()["systems"][1]["vs_first"] == {"mean": v.estimate, "low": v.low, "high": v.high,
                                                          "queries": 2, "level": 0.95}
    assert "vs_first" not in report.to_dict()["systems"][0]

    from rich.console import Console
    console = Console(record=True, width=300)
    console.print(report)
    text = " ".join(console.export_text().split())
    assert text.startswith(report.headline())
    v = rev.vs_first
    assert "ndcg@10 - oracle" in text and f"{v.estimate:+.4f} [{v.low:+.4f}, {v.high:+.4f}]" in text
    assert "[95% interval: paired bootstrap, 2000 resamples over queries]" in text


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    base = {f"q{i}": float(rng.random()) for i in range(400)}
    shifted = {q: v + 0.05 for q, v in base.items()}
    d = paired_bootstrap(shifted, base)
    assert (d.estimate, d.low, d.high) == pytest.approx((0.05, 0.05, 0.05))
    noisy = {q: v + 0.01 + float(rng.normal(0, 0.1)) for q, v in base.items()}
    # by hand: the per-query differences in query order, 2000 resamples of 400 from a generator seeded 0
    diffs = np.array([noisy[q] - base[q] for q in sorted(base)])
    means = diffs[np.random.default_rng(0).integers(0, 400, size=(2000, 400))].mean(axis=1)
    wide = paired_bootstrap(noisy, base)
    assert (wide.estimate, wide.low, wide.high) == pytest.approx((diffs.mean(), *np.quantile(means, [0.025, 0.975])),
                                                                 abs=1e-15)
    narrow = paired_bootstrap({q: v + 0.01 + float(rng.normal(0, 0.01)) for q, v in base.items()}, base)
    assert wide.high - wide.low > 5 * (narrow.high - narrow.low)
    assert narrow.low > 0                      # a small shift with little noise is found
    assert paired_bootstrap({"a": 1.0, "b": 0.0}, {"b": 0.5, "c": 0.0}).n == 1   # common queries only
    with pytest.raises(RelkitError, match="no query"):
        paired_bootstrap({"a": 1.0}, {"b": 1.0})


def test_bm25_puts_matching_items_first(judged):
    report = evaluate(judged, [make_system("bm25", judged)])
    assert report.results[0].metrics["ndcg@10"] == pytest.approx(1.0)


def test_embedding_with_real_minilm(judged):
    pairs = load_judged_pairs(judged, "test")
    scores = EmbeddingSystem().predict(pairs).scores
    by_pair = dict(zip(zip(pairs.queries, [i["title"] for i in pairs.items]), scores))
    assert by_pair[("red chair", "Red wooden chair")] > by_pair[("red chair", "Blue garden hose")]
    assert by_pair[("garden hose", "Blue garden hose")] > by_pair[("garden hose", "Red wooden chair")]
    assert np.all(np.abs(scores) <= 1.0 + 1e-5)  # cosines


def test_unknown_system_and_unsplit_workspace(ws):
    with pytest.raises(RelkitError, match="unknown system 'bm52'"):
        make_system("bm52", ws)
    with pytest.raises(RelkitError, match="relkit split"):
        load_judged_pairs(ws, "test")


def test_embedding_model_that_does_not_exist(judged, tmp_path):
    with pytest.raises(RelkitError, match="cannot load the encoder"):
        evaluate(judged, [make_system(f"embedding:{tmp_path / 'no-model'}", judged)])


def test_prediction_validates():
    with pytest.raises(ValueError, match="rows sum to 1"):
        Prediction(proba=np.array([[0.5, 0.6]]))
    with pytest.raises(ValueError, match="either proba or scores"):
        Prediction()


def test_empty_split(judged):
    with pytest.raises(RelkitError, match="the dev split has no judged pairs"):
        load_judged_pairs(judged, "dev")


@pytest.fixture
def two_languages(tmp_path, ws3):
    """Judged queries in English and German, the language given by the file; all in the test split."""
    rows = [["red chair", "Red wooden chair", "A red chair for the garden", "3", "en"],
            ["red chair", "Blue garden hose", "Fifty feet of hose", "1", "en"],
            ["red chair", "Red paint", "A gallon of red paint", "2", "en"],
            ["garden hose", "Blue garden hose", "Fifty feet of hose", "3", "en"],
            ["garden hose", "Red wooden chair", "A red chair for the garden", "1", "en"],
            ["garden hose", "Hose reel", "Winds up cord", "2", "en"],
            ["roter stuhl", "Roter Holzstuhl", "Ein roter Stuhl für den Garten", "3", "de"],
            ["roter stuhl", "Blauer Gartenschlauch", "Zwanzig Meter Schlauch", "1", "de"],
            ["gartenschlauch", "Blauer Gartenschlauch", "Zwanzig Meter Schlauch", "3", "de"],
            ["gartenschlauch", "Schlauchtrommel", "Rollt den Gartenschlauch auf", "2", "de"],
            ["gartenschlauch", "Rote Farbe", "Ein Eimer roter Farbe", "1", "de"],
            ["lampe", "Stehlampe", "Eine Lampe aus Messing", "3", "de"]]
    import_file(ws3, "judgments", write_csv(tmp_path / "j.csv", ["query", "title", "description", "label", "language"],
                                            rows), split="test")
    split_queries(ws3)
    return ws3


def test_eval_by_language_scores_each_languages_queries_alone(two_languages):
    from relkit import metrics

    ws = two_languages
    report = evaluate(ws, [make_system("bm25", ws), Reversed(), Oracle(3)], split="test", by="language")
    assert list(report.by) == ["language"] and list(report.by["language"]) == ["de", "en"]
    de, en = report.by["language"]["de"], report.by["language"]["en"]
    assert (de.queries, de.pairs, de.ranked_queries) == (3, 6, 3)
    assert (en.queries, en.pairs, en.ranked_queries) == (2, 6, 2)

    # bm25's nDCG@10 in each language: the metric function on that language's pairs alone
    pairs = load_judged_pairs(ws, "test")
    scores = make_system("bm25", ws).predict(pairs).scores
    language = dict(ws.fetchall("SELECT query_id, language FROM queries"))
    per_query = {}
    for lang, sub in (("de", de), ("en", en)):
        rows = [i for i, q in enumerate(pairs.query_ids) if language[q] == lang]
        per_query[lang] = metrics.ndcg_per_query([pairs.query_ids[i] for i in rows], [pairs.item_ids[i] for i in rows],
                                                 pairs.labels[rows], scores[rows], ws.scale.gains, (10,))[10]
        assert sub.results[0].metrics["ndcg@10"] == pytest.approx(np.mean(list(per_query[lang].values())))
        assert sub.results[0].metrics["auroc@3"] == pytest.approx(
            metrics.auroc_at(pairs.labels[rows], scores[rows], 3))
    assert set(per_query["de"]) | set(per_query["en"]) == set(pairs.query_ids)

    # by hand, gains 0, 1, 3: reversed ranks levels 1, 2, 3 (DCG 0 + 1/log2 3 + 3/2, ideal 3 + 1/log2 3);
    # 'roter stuhl' ranks 1, 3 (3/log2 3 of 3); 'lampe' has one item, relevant: 1
    three = (1 / np.log2(3) + 1.5) / (3 + 1 / np.log2(3))
    rev_en, rev_de = en.results[1].metrics["ndcg@10"], de.results[1].metrics["ndcg@10"]
    assert rev_en == pytest.approx(three)
    assert rev_de == pytest.approx((1 / np.log2(3) + three + 1.0) / 3)
    assert en.results[2].metrics["ndcg@10"] == de.results[2].metrics["ndcg@10"] == 1.0

    # the interval against the first system: the one paired bootstrap on that language's queries
    for lang, sub in (("de", de), ("en", en)):
        assert sub.results[0].vs_first is None
        oracle = {q: 1.0 for q in per_query[lang]}
        expected = paired_bootstrap(oracle, per_query[lang])
        got = sub.results[2].vs_first
        assert (got.estimate, got.low, got.high, got.n) == pytest.approx(
            (expected.estimate, expected.low, expected.high, expected.n))
        assert got.method == "paired bootstrap, 2000 resamples over queries"
    # the whole split is unchanged by grouping
    whole = evaluate(ws, [make_system("bm25", ws), Reversed(), Oracle(3)], split="test")
    assert [r.metrics for r in whole.results] == [r.metrics for r in report.results]

    out = json.loads(report.to_json())
    assert {k: out[k] for k in whole.to_dict() if k != "systems"} == {
        k: v for k, v in whole.to_dict().items() if k != "systems"}
    assert list(out["by"]["language"]) == ["de", "en"]
    de_json = out["by"]["language"]["de"]
    assert (de_json["queries"], de_json["pairs"], de_json["ranked_queries"]) == (3, 6, 3)
    assert [s["name"] for s in de_json["systems"]] == ["bm25", "reversed", "oracle"]
    assert de_json["systems"][1]["metrics"]["ndcg@10"] == pytest.approx(rev_de)
    v = de.results[2].vs_first
    assert de_json["systems"][2]["vs_first"] == {"mean": v.estimate, "low": v.low, "high": v.high, "queries": 3,
                                                 "level": 0.95}
    assert "by" not in whole.to_dict()

    from rich.console import Console
    console = Console(record=True, width=300)
    console.print(report)
    text = " ".join(console.export_text().split())
    assert "language de: 3 queries, 6 judged pairs, nDCG over the 3 with a relevant item" in text
    assert "language en: 2 queries, 6 judged pairs" in text
    assert f"{v.estimate:+.4f} [{v.low:+.4f}, {v.high:+.4f}]" in text
    assert text.index("language de") < text.index("language en")


def test_eval_by_knows_only_language(two_languages, tmp_path):
    with pytest.raises(RelkitError, match="unknown --by 'country'; expected one of: language"):
        evaluate(two_languages, [Reversed()], by="country")


def test_eval_by_language_on_the_command_line(two_languages):
    from conftest import relkit

    ws = two_languages.path
    two_languages.close()
    done = relkit("eval", "--system", "bm25", "--by", "language", "--json", "-w", ws)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [(lang, g["queries"]) for lang, g in out["by"]["language"].items()] == [("de", 3), ("en", 2)]
    done = relkit("eval", "--system", "bm25", "--by", "country", "-w", ws)
    assert done.returncode != 0 and "unknown --by 'country'; expected one of: language" in done.stderr
