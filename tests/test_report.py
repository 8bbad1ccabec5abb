"""relkit report: the numbers on a real workspace with a tiny real teacher, a distilled student,
saved studies and an engagement log; the page opened in a real headless Chromium."""
import json
import re

import numpy as np
import pytest

from conftest import ITEMS, make_shop, relkit, write_csv, write_teacher_labels
from relkit import RelkitError, import_file, make_system
from relkit.ablation import ablate
from relkit.audit.core import audit
from relkit.metrics import confusion, reliability
from relkit.report import SECTIONS, build, write
from relkit.student import FeatureConfig, StudentConfig
from relkit.student.distill import Distiller, scaling_curve
from relkit.teacher import TrainConfig, train_teacher
from tiny_models import build as build_model



@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A shop workspace with a tiny teacher (trained, so it has a history), a student of the rule
    teacher's labels, a scaling curve, an ablation and an engagement log; its report written."""
    tmp = tmp_path_factory.mktemp("report")
    ws = make_shop(tmp)
    bert = build_model("bert", tmp)
    train_teacher(ws, TrainConfig(model=str(bert), name="tiny", epochs=2, batch_size=8, max_length=24, prior="none"))
    write_teacher_labels(ws)
    distiller = Distiller(ws, "rule", FeatureConfig(groups=("bm25", "text_match")))
    distiller.train(None, StudentConfig(epochs=8)).save(ws.artifacts / "student-rule")
    scaling_curve(distiller, [50, None], StudentConfig(epochs=3), prefix="curve")
    ablate(ws, TrainConfig(model=str(bert), epochs=1, batch_size=8, max_length=24, prior="none"),
           ["title", "description"])
    queries = [q for (q,) in ws.fetchall("SELECT query FROM queries ORDER BY query")]
    log = [[q, "red-chair", str(10 * (n + 1)), "1", "2026-01-01"] for n, q in enumerate(queries)]
    import_file(ws, "engagement", write_csv(tmp / "e.csv", ["query", "item_id", "impressions", "clicks", "timestamp"],
                                            log))
    items = [i for (i,) in ws.fetchall("SELECT item_id FROM items ORDER BY item_id")]
    runs = []
    for name, ranked in (("plain", items[:10]), ("reversed", items[::-1][:10])):
        runs.append(f"{name}={tmp / (name + '.trec')}")
        (tmp / f"{name}.trec").write_text("".join(f"{q} Q0 {item} {rank} {10 - rank} {name}\n" for q in
                                                  [q for (q,) in ws.fetchall("SELECT query_id FROM queries")]
                                                  for rank, item in enumerate(ranked, start=1)))
    audit(ws, "student:rule", runs=runs, k=10, name="weekly")
    ws.run("UPDATE queries SET language = CASE WHEN query LIKE 'red %' THEN 'es' ELSE 'en' END")
    ws.run("""UPDATE items SET title = title || ' <i>&"co"</i>'""")            # text to escape, never markup
    systems = [make_system(s, ws) for s in ("student:rule", "teacher:tiny", "bm25")]
    data = build(ws, systems, "test", command="relkit report -s student:rule -s teacher:tiny -s bm25")
    path = write(data, tmp / "out" / "report.html")
    ws.close()
    yield ws.path, data, path


def test_reliability_and_confusion_are_what_they_say():
    y = np.array([1, 1, 2, 3, 3, 3])
    rows, ece = reliability(y, np.array([0.05, 0.15, 0.55, 0.95, 0.95, 0.65]), 2, bins=10)
    assert [(r["pairs"], r["observed"]) for r in rows] == [(1, 0.0), (1, 0.0), (1, 1.0), (1, 1.0), (2, 1.0)]
    expected = (0.05 + 0.15 + 0.45 + 0.35 + 2 * 0.05) / 6
    assert ece == pytest.approx(expected)
    assert reliability(y, (y >= 2).astype(float), 2)[1] == 0.0                 # a certain, right predictor
    assert confusion(y, np.array([1, 2, 2, 3, 3, 1]), 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_report_numbers(reported):
    _, data, _ = reported
    n = data.evaluation["pairs"]
    student, teacher, bm25 = data.levels
    assert teacher.decision == "own" and student.decision == "own" and bm25.decision is None
    for lv in (teacher, student):
        assert np.sum(lv.confusion) == np.sum(lv.confusion_argmax) == n
        assert sorted(lv.reliability) == [2, 3]
        assert all(sum(b["pairs"] for b in r["bins"]) == n and 0 <= r["ece"] <= 1 for r in lv.reliability.values())
    assert bm25.confusion is None and sum(s["n"] for s in bm25.score_by_level.values()) == n
    # the student has the rule teacher's cutpoints: its decision's matrix is what eval scores
    metrics = data.evaluation["systems"][0]["metrics"]
    assert np.trace(student.confusion) / n == pytest.approx(metrics["accuracy"])
    assert np.trace(student.confusion_argmax) / n == pytest.approx(metrics["argmax_accuracy"])
    for n, system in ((1, "teacher:tiny"), (2, "bm25")):
        diffs = [d["diff"] for d in data.per_query[system]]
        assert diffs == sorted(diffs) and len(diffs) == data.evaluation["ranked_queries"]
        vs_first = data.evaluation["systems"][n]["vs_first"]
        assert np.mean(diffs) == pytest.approx(vs_first["mean"])
        lost = data.lost[system]
        assert len(lost) == min(20, sum(d < 0 for d in diffs))
        for q in lost:
            assert q.this < q.first and q.items
            assert all(1 <= it["level"] <= 3 for it in q.items)
    assert [t["teacher"] for t in data.training] == ["teacher:tiny"] and data.training[0]["history"][0]["step"] == 0
    assert [c["name"] for c in data.scaling] == ["curve"]
    assert [r["name"] for r in data.scaling[0]["rows"]] == ["human", "50", str(data.scaling[0]["rows"][2]["teacher_pairs"])]
    assert [a["name"] for a in data.ablation] == ["ablate"] and len(data.ablation[0]["rows"]) == 2
    languages = {r["group"]: r for r in data.breakdown["language"]}
    assert set(languages) == {"en", "es"} and sum(r["queries"] for r in languages.values()) == data.evaluation["queries"]
    assert [r["group"] for r in data.breakdown["frequency"]] == ["head", "torso", "tail"]
    assert json.loads(data.to_json())["levels"][1]["system"] == "teacher:tiny"


def escaped(text: str) -> str:
    """`text` as the page holds it: &, <, > and " escaped (the last as Jinja writes it, &#34;)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")


def test_report_page_has_every_section_and_escapes_text(reported):
    _, data, path = reported
    html = path.read_text()
    for section_id, _, _ in SECTIONS:
        assert f'id="{section_id}"' in html
    # the items of each query the teacher lost, their titles escaped (each title ends in <i>&"co"</i>)
    lost = data.lost["teacher:tiny"]
    assert len(lost) == min(20, sum(d["diff"] < 0 for d in data.per_query["teacher:tiny"])) >= 1
    titles = {item_id: f'{title} <i>&"co"</i>' for item_id, title, _ in ITEMS}
    for q in lost:
        for it in q.items:
            item = it["item_id"]
            assert f'<td class="text">{item}</td><td class="text">{escaped(titles[item])}</td>' in html
    assert "&lt;i&gt;&amp;&#34;co&#34;&lt;/i&gt;" in html and '<i>&"co"</i>' not in html
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"url\((?!#)", html)                           # only references inside the page
    assert {u.split("/")[2] for u in re.findall(r"https?://[^\s\"'<>)]+", html)} <= {"www.w3.org"}   # namespaces only
    # a plot of scores by level for each system; for each with probabilities (student, teacher) a confusion
    # matrix of its decision, one of its argmax where the two differ, and a reliability plot; the per-query
    # differences; the teacher's training; the scaling curve
    plots = [f"{s}: score by human level" for s in ("student:rule", "teacher:tiny", "bm25")]
    for lv in data.levels[:2]:
        both = lv.confusion != lv.confusion_argmax
        plots += [f"{lv.system}: {'its decision (cutpoints)' if both else 'argmax'}",
                   f"{lv.system}: reliability of P(level >= t)"] + ([f"{lv.system}: argmax"] if both else [])
    assert data.levels[2].confusion is None
    assert html.count("<svg") == len(plots) + 3
    for title in plots:
        assert f">{escaped(title)}</text>" in html, title
    assert data.command in html and data.version in html
    (weekly,) = data.audits
    plain, reverse = weekly["systems"]
    assert weekly["name"] == "weekly" and weekly["judge"] == "student:rule" and weekly["comparison"]
    assert "per_query" not in plain and weekly["queries"] > 0
    audits = html[html.index('id="audits"'):html.index('id="about"')]
    assert "weekly" in audits and "<td>plain</td>" in audits and f"<td>{plain['ndcg']['mean']:.4f}</td>" in audits
    c = weekly["comparison"]
    assert f"{c['a']} &minus; {c['b']}: {c['difference']['mean']:+.4f}" in audits



def test_report_renders_offline_in_chromium(reported, browser):
    _, data, path = reported
    page = browser.new_page()
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri(), wait_until="load")
    assert errors == []
    assert requests == [path.resolve().as_uri()]            # the page itself, nothing else
    for section_id, title, _ in SECTIONS:
        element = page.locator(f"#{section_id}")
        assert element.count() == 1 and element.is_visible(), section_id
        assert title in element.inner_text()
    assert page.locator("svg").count() >= 10
    box = page.locator("#levels svg").first.bounding_box()
    assert box["width"] > 100 and box["height"] > 100            # plots are drawn at a readable size
    page.set_viewport_size({"width": 1280, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280       # fits a laptop screen
    page.locator("#queries details summary").first.click()                    # a lost query opens
    assert page.locator("#queries details[open] table").count() == 1
    page.close()


def test_cli_report_writes_html_and_json(reported, tmp_path):
    ws_path = str(reported[0])
    out = tmp_path / "r.html"
    done = relkit("report", "-s", "student:rule", "-s", "bm25", "-o", out, "--json", "-w", ws_path)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout and out.stat().st_size > 10_000
    numbers = json.loads(out.with_suffix(".json").read_text())
    assert [s["name"] for s in numbers["evaluation"]["systems"]] == ["student:rule", "bm25"]
    assert numbers["command"].startswith("relkit report -s student:rule") and numbers["split"] == "test"
    bad = relkit("report", "-s", "bm25", "-o", tmp_path / "r.pdf", "-w", ws_path)
    assert bad.returncode == 2 and "--output is an HTML file" in bad.stderr
    twice = relkit("report", "-s", "bm25", "-s", "bm25", "-o", out, "-w", ws_path)
    assert twice.returncode == 2 and "each --system once" in twice.stderr
    missing = relkit("report", "-s", "student:nobody", "-o", out, "-w", ws_path)
    assert missing.returncode == 2 and "no student 'nobody'" in missing.stderr


def test_report_refuses_no_system(tmp_path):
    ws = make_shop(tmp_path)
    with pytest.raises(RelkitError, match="at least one --system"):
        build(ws, [], "test")
    ws.close()
