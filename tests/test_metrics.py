"""Each metric against a value worked out by hand (the working is in the comments)."""
import math

import numpy as np
import pytest

from relkit import metrics

Y = np.array([1, 2, 3, 3])
PRED = np.array([1, 3, 3, 2])
PROBA = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.3, 0.4, 0.3]])


def test_accuracy():
    assert metrics.accuracy(Y, PRED) == 0.5  # pairs 1 and 3 of 4 are right


def test_macro_f1():
    # level 1: TP 1, FP 0, FN 0 -> F1 1; level 2: TP 0 -> F1 0;
    # level 3: TP 1, FP 1 (true 2), FN 1 (predicted 2) -> P = R = 1/2 -> F1 1/2; mean (1 + 0 + 1/2) / 3
    assert metrics.macro_f1(Y, PRED) == pytest.approx(0.5)


def test_quadratic_kappa():
    # observed O (true x predicted) = [[1,0,0],[0,0,1],[0,1,1]]; marginals (1,1,2) both ways, n = 4
    # expected E = outer / 4 = [[1,1,2],[1,1,2],[2,2,4]] / 4; weights (i-j)^2 / 4
    # sum W*O = 0.25 + 0.25 = 0.5; sum W*E = (0.25+2+0.25+0.5+2+0.5) / 4 = 1.375
    # kappa = 1 - 0.5 / 1.375 = 7/11
    assert metrics.quadratic_kappa(Y, PRED, [1, 2, 3]) == pytest.approx(7 / 11)
    assert metrics.quadratic_kappa(Y, Y, [1, 2, 3]) == pytest.approx(1.0)


def test_auroc_at_each_threshold():
    # P(level >= 2) = (.3, .8, .9, .7); only pair 1 is below 2 and it scores lowest -> 1.0
    assert metrics.auroc_at(Y, PROBA[:, 1:].sum(1), 2) == pytest.approx(1.0)
    # P(level >= 3) = (.1, .3, .6, .3); positives .6 and .3 vs negatives .1 and .3:
    # .6>.1, .6>.3, .3>.1 win, .3=.3 ties (half) -> 3.5 / 4
    assert metrics.auroc_at(Y, PROBA[:, 2:].sum(1), 3) == pytest.approx(0.875)
    assert math.isnan(metrics.auroc_at(np.array([2, 2]), np.array([0.1, 0.2]), 2))


def test_rmse_of_expected_level():
    # expected levels 1.4, 2.1, 2.5, 2.0; errors .4, .1, -.5, -1 -> squares sum 1.42 -> sqrt(1.42 / 4)
    assert metrics.expected_level(PROBA) == pytest.approx([1.4, 2.1, 2.5, 2.0])
    assert metrics.rmse_expected_level(Y, PROBA) == pytest.approx(math.sqrt(0.355))


def test_ndcg_per_query_with_scale_gains():
    gains = (0, 1, 3)  # levels 1, 2, 3
    qids = ["q1", "q1", "q1", "q2", "q2", "q3", "q3"]
    items = ["a", "b", "c", "d", "e", "d", "e"]
    labels = np.array([3, 1, 2, 1, 1, 2, 1])
    scores = np.array([0.1, 0.9, 0.5, 0.3, 0.2, 0.2, 0.1])
    out = metrics.ndcg_per_query(qids, items, labels, scores, gains, cutoffs=(1, 2, 5))
    # q1 ranks b (gain 0), c (1), a (3): DCG@5 = 0 + 1/log2(3) + 3/log2(4); ideal = 3 + 1/log2(3)
    l3 = math.log2(3)
    assert out[5]["q1"] == pytest.approx((1 / l3 + 1.5) / (3 + 1 / l3))
    assert out[2]["q1"] == pytest.approx((1 / l3) / (3 + 1 / l3))
    assert out[1]["q1"] == 0.0
    # q2 has only gain-0 items: nDCG is 0/0 and the query is left out
    assert "q2" not in out[5]
    # q3 puts its only relevant item first
    assert out[1]["q3"] == out[5]["q3"] == 1.0


def test_dcg_of_one_list_and_of_rows():
    # ranks 1..4 are discounted by log2(2), log2(3), log2(4), log2(5): 3/1 + 1/log2(3) + 0/2 + 2/log2(5)
    by_hand = 3 + 1 / math.log2(3) + 2 / math.log2(5)
    assert metrics.dcg([3, 1, 0, 2]) == pytest.approx(by_hand, rel=1e-15)
    assert metrics.dcg([]) == 0.0 and metrics.dcg([0.5]) == 0.5
    # one list per row: [0, 3] earns 3/log2(3) only; a trailing 0 changes nothing
    rows = metrics.dcg(np.array([[3.0, 1.0, 0.0, 2.0], [0.0, 3.0, 0.0, 0.0]]))
    assert rows.tolist() == pytest.approx([by_hand, 3 / math.log2(3)], rel=1e-15)


def test_cutpoints():
    # levels from the expected level: below 1.5 -> 1, [1.5, 2.5) -> 2, from 2.5 -> 3
    assert metrics.apply_cutpoints(np.array([1.0, 1.5, 2.49, 2.5, 9.0]), [1.5, 2.5]).tolist() == [1, 2, 2, 3, 3]
    # a model that is right up to a shift of -0.8: the fitted cuts undo the shift, the default ones cannot
    rng = np.random.default_rng(0)
    y = rng.integers(1, 4, 300)
    expected = y - 0.8 + rng.normal(0, 0.1, 300)
    cuts = metrics.fit_cutpoints(expected, y, [1, 2, 3])
    assert np.all(np.diff(cuts) > 0)
    fitted = metrics.quadratic_kappa(y, metrics.apply_cutpoints(expected, cuts), [1, 2, 3])
    default = metrics.quadratic_kappa(y, metrics.apply_cutpoints(expected, [1.5, 2.5]), [1, 2, 3])
    assert fitted > 0.99 > default
