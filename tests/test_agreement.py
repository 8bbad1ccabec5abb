import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from conftest import level, relkit, write_teacher_labels
from relkit import RelkitError, Workspace
from relkit.annotation.agreement import agreement_report, ensure_annotations_table, low_median
from relkit.labels import refresh_view

T0 = datetime(2026, 1, 5, 9, 0, 0)


def annotate(ws: Workspace, rows: list[tuple]) -> None:
    """rows: (annotator, query_id, item_id, label, seconds); created one after another, 10 s apart."""
    ensure_annotations_table(ws)
    start = ws.count("annotations")
    ws.con.executemany("INSERT INTO annotations VALUES (?, ?, ?, ?, NULL, ?, ?)",
                       [(a, q, i, label, T0 + timedelta(seconds=10 * (start + n)), s)
                        for n, (a, q, i, label, s) in enumerate(rows)])


@pytest.fixture
def three(ws3):
    """Three annotators on a 3-level scale; ann changed her mind on p4 (the later label counts)."""
    annotate(ws3, [
        ("ann", "q", "p4", 3, 1.0),
        ("ann", "q", "p1", 1, 3.0), ("ann", "q", "p2", 2, 6.0), ("ann", "q", "p3", 3, 9.0), ("ann", "q", "p4", 1, 18.0),
        ("bob", "q", "p1", 1, 2.0), ("bob", "q", "p2", 2, 2.0), ("bob", "q", "p3", 3, 2.0), ("bob", "q", "p4", 2, 2.0),
        ("bob", "q", "p5", 3, 2.0),
        ("cy", "q", "p1", 2, 5.0), ("cy", "q", "p2", 2, 5.0), ("cy", "q", "p5", 3, None),
    ])
    return ws3


def test_weighted_kappa_per_pair_of_annotators_by_hand(three):
    report = agreement_report(three)
    by_pair = {(c.a, c.b): c for c in report.pairwise}
    ab = by_pair[("ann", "bob")]
    # quadratic weights (i-j)^2/4: observed disagreement 0.25/4 = 0.0625; the marginals (.5,.25,.25) and
    # (.25,.5,.25) expect 0.3125; kappa = 1 - 0.0625/0.3125
    assert ab.pairs == 4 and ab.kappa == pytest.approx(0.8)
    assert ab.exact == pytest.approx(0.75) and ab.mean_abs_diff == pytest.approx(0.25)
    assert ab.confusion == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    # cy says level 2 on both shared pairs: observed = expected disagreement, kappa 0
    assert by_pair[("ann", "cy")].pairs == 2 and by_pair[("ann", "cy")].kappa == pytest.approx(0.0)
    # bob (1,2,3) against cy (2,2,3): observed 0.25/3, expected 9/36
    assert by_pair[("bob", "cy")].pairs == 3 and by_pair[("bob", "cy")].kappa == pytest.approx(2 / 3)


def test_each_annotator_against_the_consensus_and_per_hour(three):
    report = agreement_report(three)
    ann = next(a for a in report.annotators if a.annotator == "ann")
    # consensus of p1..p4 = lower median of the others: (bob 1, cy 2) -> 1, (2, 2) -> 2, 3, 2
    assert ann.vs_consensus.pairs == 4 and ann.vs_consensus.kappa == pytest.approx(0.8)
    assert ann.judgments == 4   # the overwritten p4 counts once
    # 3 + 6 + 9 + 18 = 36 s of judging for four judgments: 400 an hour; the replaced row's second is not counted
    assert ann.hours == pytest.approx(0.01) and ann.per_hour == pytest.approx(400.0)
    assert ann.median_seconds == pytest.approx(7.5)
    cy = next(a for a in report.annotators if a.annotator == "cy")
    assert cy.per_hour == pytest.approx(2 / (10 / 3600))   # the judgment without seconds is left out
    assert report.judged_pairs == 5 and report.alpha_pairs == 5
    assert low_median([4, 1, 3, 2]) == 2


KRIPPENDORFF_2011 = [  # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C:
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],     # observers A-D, units 1-12, values 1..5, missing
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],            # values allowed; published: alpha ordinal .815,
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],         # interval .849, nominal .743
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def test_ordinal_alpha_matches_krippendorffs_published_example(ws):
    rows = [(f"observer-{chr(65 + a)}", "q", f"unit-{u:02d}", v, 4.0)
            for a, values in enumerate(KRIPPENDORFF_2011) for u, v in enumerate(values, start=1) if v is not None]
    annotate(ws, rows)
    report = agreement_report(ws)
    assert round(report.alpha, 3) == 0.815
    assert report.alpha_pairs == 11   # unit 12 has one value: not pairable
    assert report.to_dict()["alpha"] == {"ordinal": report.alpha, "pairs": 11}


def test_alpha_is_undefined_without_two_levels(ws3):
    annotate(ws3, [("a", "q", "x", 2, 1.0), ("b", "q", "x", 2, 1.0)])
    report = agreement_report(ws3)
    assert report.alpha is None and report.pairwise[0].kappa is None and report.pairwise[0].exact == 1.0


def test_against_the_teachers_level(shop):
    write_teacher_labels(shop)           # the rule teacher: 0.8 on the rule's level, no saved model
    refresh_view(shop)
    rows = shop.fetchall("""SELECT l.query_id, q.query, l.item_id, i.title FROM teacher_labels l
                            JOIN queries q USING (query_id) JOIN items i USING (item_id) ORDER BY 1, 3 LIMIT 6""")
    truth = [level(q, t) for _, q, _, t in rows]
    mine = truth[:5] + [truth[5] % 3 + 1]         # the last one differs from the teacher
    annotate(shop, [("ann", q, i, lab, 2.0) for (q, _, i, _), lab in zip(rows, mine)])
    report = agreement_report(shop, teacher="rule")
    ann = report.annotators[0]
    assert report.teacher == "rule" and ann.vs_teacher.pairs == 6
    assert ann.vs_teacher.exact == pytest.approx(5 / 6)
    expected = np.zeros((3, 3), dtype=int)
    for a, b in zip(mine, truth):
        expected[a - 1, b - 1] += 1
    assert ann.vs_teacher.confusion == expected.tolist()
    assert ann.vs_consensus is None and report.pairwise == []
    with pytest.raises(RelkitError, match="no teacher 'nobody'"):
        agreement_report(shop, teacher="nobody")


def test_errors_name_the_problem(ws3):
    with pytest.raises(RelkitError, match="no annotations yet"):
        agreement_report(ws3)
    annotate(ws3, [("ann", "q1", "x", 7, 1.0)])
    with pytest.raises(RelkitError, match=r"ann's label of \(q1, x\) is 7; the scale has levels 1..3"):
        agreement_report(ws3)


def test_cli_agreement_json_and_table(three):
    path = three.path
    three.close()
    out = relkit("agreement", "-w", path, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [a["annotator"] for a in data["annotators"]] == ["ann", "bob", "cy"]
    assert data["pairwise"][0]["kappa"] == pytest.approx(0.8)
    table = relkit("agreement", "-w", path)
    assert table.returncode == 0 and "Krippendorff's alpha (ordinal)" in table.stdout
    assert "ann (rows) against bob (columns)" in table.stdout
    bad = relkit("agreement", "-w", path, "--teacher", "nobody")
    assert bad.returncode == 2 and "no teacher 'nobody'" in bad.stderr
