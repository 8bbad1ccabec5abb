import logging
import re

import numpy as np
import pytest

from conftest import ITEMS, level, write_teacher_labels
from relkit import RelkitError, Workspace
from relkit.annotation.agreement import ensure_annotations_table
from relkit.annotation.queue import (COLD_TOP, entropy, interleave, judged_pairs, parse_weights, rank_pairs,
                                     spread_order)
from relkit.baselines import catalog_index

UNSURE = {1: [0.9, 0.05, 0.05], 2: [0.5, 0.3, 0.2], 3: [0.34, 0.33, 0.33]}   # the rule's level 3 is least sure


def add_candidates(ws) -> int:
    """Every unjudged (train query, item) pair becomes a candidate."""
    ws.run("""INSERT INTO pairs SELECT q.query_id, i.item_id, 'all' FROM queries q JOIN splits s USING (query_id)
              CROSS JOIN items i WHERE s.split = 'train'
              AND NOT EXISTS (SELECT 1 FROM judgments j WHERE j.query_id = q.query_id AND j.item_id = i.item_id)""")
    return ws.count("pairs")


def rule_level(ws, pair) -> int:
    (query,) = ws.fetchone("SELECT query FROM queries WHERE query_id = ?", [pair[0]])
    (title,) = ws.fetchone("SELECT title FROM items WHERE item_id = ?", [pair[1]])
    return level(query, title)


def test_interleave_by_weight():
    a, b = [f"a{i}" for i in range(30)], [f"b{i}" for i in range(30)]
    mixed = interleave({"uncertain": a, "diverse": b}, {"uncertain": 3.0, "diverse": 1.0})
    assert sum(x.startswith("a") for x in mixed[:20]) == 15      # three of every four
    assert len(mixed) == 60 and len(set(mixed)) == 60             # the rest once one list ran out
    assert [x for x in mixed if x.startswith("a")] == a           # each list keeps its order
    assert interleave({"x": [1, 2, 3], "y": [2, 3, 4]}, {"x": 1, "y": 1}) == [1, 2, 3, 4]   # each pair once
    assert interleave({"x": [1, 2, 3]}, {"x": 1}, limit=2) == [1, 2]
    assert parse_weights("uncertain=3,diverse, cold=0") == {"uncertain": 3.0, "diverse": 1.0}
    with pytest.raises(RelkitError, match="unknown queue strategy 'unsure'"):
        parse_weights("unsure=1")
    with pytest.raises(RelkitError, match="'uncertain=lots' is not STRATEGY=NUMBER"):
        parse_weights("uncertain=lots")
    with pytest.raises(RelkitError, match="at least one queue strategy a weight above 0"):
        parse_weights("cold=0")
    assert spread_order(5) == [0, 3, 4, 1, 2] and spread_order(24)[:2] == [0, 12]


def test_uncertain_orders_by_the_stored_teacher_labels_and_skips_judged_pairs(shop):
    n = add_candidates(shop)
    write_teacher_labels(shop, "rule", UNSURE)
    order = rank_pairs(shop, {"uncertain": 1})
    assert len(order) == n and len(set(order)) == n
    levels = [rule_level(shop, p) for p in order]
    assert levels == sorted(levels, reverse=True)       # entropy: level 3's labels, then 2's, then 1's
    assert not set(order) & judged_pairs(shop)
    assert rank_pairs(shop, {"uncertain": 1}, model="teacher:rule") == order   # named, the same teacher
    assert rank_pairs(shop, {"uncertain": 1}, seed=0) == order                   # deterministic for a seed
    shop.close()
    with Workspace.open(shop.path, read_only=True) as reader:                    # the app may only read
        assert rank_pairs(reader, {"uncertain": 1}) == order
    ensure_annotations_table(shop)
    shop.run("INSERT INTO annotations VALUES ('ann', ?, ?, 3, NULL, now(), 2.5)", list(order[0]))
    again = rank_pairs(shop, {"uncertain": 1})
    assert order[0] not in again and len(again) == n - 1   # judged by someone: never proposed again
    write_teacher_labels(shop, "other")
    with pytest.raises(RelkitError, match="uncertain needs a model .* there are labels of other, rule"):
        rank_pairs(shop, {"uncertain": 1})


def test_uncertain_scores_with_a_student(shop):
    from relkit.annotation.queue import score_pairs
    from relkit.student.distill import Distiller
    from relkit.student.model import StudentConfig

    add_candidates(shop)
    write_teacher_labels(shop)
    distiller = Distiller(shop, "rule")
    distiller.train(None, StudentConfig(epochs=3, hidden=(16,))).save(shop.artifacts / "student-s")
    order = rank_pairs(shop, {"uncertain": 1}, model="student:s")
    pairs = sorted(order)
    h = dict(zip(pairs, entropy(score_pairs(shop, "student:s", pairs))))
    assert [h[p] for p in order] == sorted(h.values(), reverse=True)
    assert len(set(h.values())) > 10   # the student's distributions differ from pair to pair


def test_uncertain_and_disagree_need_what_they_read(shop):
    with pytest.raises(RelkitError, match="uncertain: the workspace has no candidate pairs; make more with `relkit pa"):
        rank_pairs(shop, {"uncertain": 1})
    add_candidates(shop)
    with pytest.raises(RelkitError, match="needs a model .* or the labels of one teacher .* no teacher labels"):
        rank_pairs(shop, {"uncertain": 1})
    with pytest.raises(RelkitError, match="the queue's model is teacher:NAME or student:NAME, not 'bm25'"):
        rank_pairs(shop, {"uncertain": 1}, model="bm25")
    write_teacher_labels(shop, "rule")
    with pytest.raises(RelkitError, match="disagree needs labels from at least two sources .* found rule"):
        rank_pairs(shop, {"disagree": 1})
    with pytest.raises(RelkitError, match="no student 'gone'"):
        rank_pairs(shop, {"uncertain": 1}, model="student:gone")


def test_disagree_puts_the_pairs_the_teachers_place_furthest_apart_first(shop):
    add_candidates(shop)
    write_teacher_labels(shop, "rule")                                  # expected level near the rule's
    write_teacher_labels(shop, "flip", {1: [0.1, 0.1, 0.8], 2: [0.1, 0.8, 0.1], 3: [0.8, 0.1, 0.1]})
    order = rank_pairs(shop, {"disagree": 1})
    levels = [rule_level(shop, p) for p in order]
    # level 1 is flipped (expected levels 1.3 and 2.7 apart), level 2 agreed on; level 3 pairs are all judged
    assert levels == sorted(levels) and set(levels) == {1, 2}


def test_diverse_spreads_over_queries_and_candidate_ranks(shop):
    n = add_candidates(shop)
    order = rank_pairs(shop, {"diverse": 1}, seed=4)
    assert len(order) == n
    queries = {q for q, _ in order}
    first_round = order[:len(queries)]
    assert {q for q, _ in first_round} == queries      # one pair of every query before a second of any
    index = catalog_index(shop)
    for qid in list(queries)[:3]:
        (query,) = shop.fetchone("SELECT query FROM queries WHERE query_id = ?", [qid])
        mine = [i for q, i in order if q == qid]
        by_id = sorted(mine)     # BM25 rank, ties in item order
        ranked = [by_id[j] for j in np.argsort(-index.score(query, by_id), kind="stable")]
        assert ranked.index(mine[0]) == 0 and ranked.index(mine[1]) == (len(mine) + 1) // 2   # top, then the middle
    # a query with an annotation has more judgments: it comes after the others in each round
    ensure_annotations_table(shop)
    first = order[0]
    for pair in [p for p in order if p[0] == first[0]][:3]:   # 7 or 8 judgments a query before, now 10 or 11
        shop.run("INSERT INTO annotations VALUES ('ann', ?, ?, 1, NULL, now(), 1.0)", list(pair))
    again = rank_pairs(shop, {"diverse": 1}, seed=4)
    assert again[len(queries) - 1][0] == first[0]
    assert rank_pairs(shop, {"diverse": 1}, seed=5)[:len(queries)] != first_round[:len(queries)]


def test_cold_start_takes_retrieved_items_and_random_negatives(shop):
    order = rank_pairs(shop, {"cold": 1}, seed=1)
    queries = dict(shop.fetchall("SELECT query_id, query FROM queries"))
    assert {q for q, _ in order[:len(queries)]} == set(queries)          # every query, dev and test too
    assert not set(order) & judged_pairs(shop)
    index = catalog_index(shop)
    item_ids = [r[0] for r in shop.fetchall("SELECT item_id FROM items ORDER BY item_id")]
    retrieved_or_random = 0
    for qid, text in queries.items():
        mine = [i for q, i in order if q == qid]
        top = [item_ids[p] for p in index.top_k([text], COLD_TOP)[0]]
        unjudged_top = [i for i in top if (qid, i) not in judged_pairs(shop)]
        if unjudged_top:
            assert unjudged_top[0] in mine
        retrieved_or_random += sum(i not in top for i in mine)
    assert retrieved_or_random > 0           # bi-encoder finds and random negatives beyond BM25's top
    assert rank_pairs(shop, {"cold": 1}, seed=1) == order
    assert rank_pairs(shop, {"cold": 1}, seed=2) != order


def test_building_the_queue_says_how_far_it_got_and_how_long_it_took(shop, caplog, monkeypatch):
    """`relkit annotate` builds its queue before it answers: the log says it started, how far the
    encoding got (off a terminal, a line a minute: here at every step) and, at the end, the pairs of
    each strategy and the seconds it took. The vectors it encoded stay in the workspace, so the next
    start loads no encoder at all."""
    import relkit.features.embeddings
    import relkit.logs

    monkeypatch.setattr(relkit.logs, "LOG_EVERY", 0.0)
    monkeypatch.setattr(relkit.logs, "_on_terminal", lambda: False)    # as `relkit annotate 2> log` runs
    caplog.set_level(logging.INFO, logger="relkit")
    order = rank_pairs(shop, {"cold": 1}, seed=1)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("relkit")]
    texts = len(ITEMS) + shop.count("queries")       # 32 item texts and 32 queries, all different
    assert said[0] == "building the annotation queue (cold=1)"
    encoding = [m for m in said if m.startswith("encoding")]
    assert len(encoding) == 1 and encoding[0].startswith(f"encoding item and query texts: {texts}/{texts} (100%), ")
    assert re.fullmatch(rf"queue strategy cold: {len(order)} pairs in \d+\.\d s", said[-2])
    assert re.fullmatch(rf"annotation queue: {len(order)} pairs, built in \d+\.\d s", said[-1])
    assert shop.count("text_vectors") == texts

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder was loaded though every vector is in the workspace")

    monkeypatch.setattr(relkit.features.embeddings, "Encoder", no_encoder)
    caplog.clear()
    assert rank_pairs(shop, {"cold": 1}, seed=1) == order
    assert not [r for r in caplog.records if r.getMessage().startswith("encoding")]


def test_mixed_strategies(shop):
    add_candidates(shop)
    write_teacher_labels(shop, "rule", UNSURE)
    unsure = rank_pairs(shop, {"uncertain": 1})
    spread = rank_pairs(shop, {"diverse": 1})
    mixed = rank_pairs(shop, {"uncertain": 3, "diverse": 1}, limit=40)
    assert len(mixed) == 40 and len(set(mixed)) == 40
    assert spread[0] not in unsure[:2]
    assert mixed[:4] == [unsure[0], unsure[1], spread[0], unsure[2]]   # weights 3:1 -> u, u, d, u, ...
    from_unsure = sum(p in set(unsure[:34]) and p not in set(spread[:10]) for p in mixed)
    assert 26 <= from_unsure <= 30


def test_pairs_only_annotators_judged_stay_in_the_apps_order(shop):
    """A pair one annotator judged may be owed a second: the app's order keeps it, the queue's drops it."""
    add_candidates(shop)
    imported = sorted(judged_pairs(shop))[0]                  # a label people gave elsewhere, also a candidate
    shop.run("INSERT OR IGNORE INTO pairs VALUES (?, ?, 'file')", list(imported))
    order = rank_pairs(shop, {"diverse": 1}, seed=0)
    ensure_annotations_table(shop)
    once = order[0]
    shop.run("INSERT INTO annotations VALUES ('ann', ?, ?, 2, NULL, now(), 1.0)", list(once))
    shop.run("INSERT INTO judgments (query_id, item_id, label, extra) VALUES (?, ?, 2, '{\"source\": \"annotation\"}')",
             list(once))
    assert once not in rank_pairs(shop, {"diverse": 1}, seed=0)
    assert once in rank_pairs(shop, {"diverse": 1}, seed=0, annotated=True)
    assert imported not in order and imported not in rank_pairs(shop, {"diverse": 1}, seed=0, annotated=True)
