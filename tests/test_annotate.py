"""relkit annotate: the real app (`python -m relkit annotate`) on loopback, driven by people in a real
headless Chromium and by an HTTP client; the journal and the workspace tables checked afterwards."""
import base64
import hashlib
import hmac
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import free_port, relkit, write_csv
from relkit import LabelScale, Workspace, import_file
from relkit.annotation.campaign import Campaign, Pair
from relkit.annotation.auth import COOKIE
from relkit.annotation.store import JOURNAL_NAME, Conflict, Journal, merge, resolve, set_rule

QUERIES = 6
PER_QUERY = 5


def make_campaign(tmp: Path) -> Path:
    """A 3-level workspace: 6 queries, 30 items whose titles hold markup, 5 candidate pairs per query,
    and one imported judgment."""
    ws = Workspace.create(tmp / "ws", LabelScale(names=("bad", "fair", "good"), gains=(0, 1, 2)))
    items = [[f"i{n}", f"item {n} <script>window.pwned = {n}</script>", f'made of <b>oak</b> & "pine" {n}']
             for n in range(QUERIES * PER_QUERY)]
    import_file(ws, "items", write_csv(tmp / "items.csv", ["item_id", "title", "description"], items))
    import_file(ws, "queries", write_csv(tmp / "queries.csv", ["query_id", "query"],
                                         [[f"q{n}", f"oak table {n}"] for n in range(QUERIES)]))
    pairs = [[f"q{q}", f"i{q * PER_QUERY + k}"] for q in range(QUERIES) for k in range(PER_QUERY)]
    import_file(ws, "pairs", write_csv(tmp / "pairs.csv", ["query_id", "item_id"], pairs))
    import_file(ws, "judgments", write_csv(tmp / "judged.csv", ["query_id", "item_id", "label"], [["q0", "i29", "3"]]))
    ws.close()
    return tmp / "ws"


class App:
    """`relkit annotate` in a process of its own."""

    def __init__(self, ws: Path, *args: str, host: str = "127.0.0.1"):
        self.ws, self.args, self.host = ws, args, host
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> "App":
        self.proc = subprocess.Popen([sys.executable, "-m", "relkit", "annotate", "-w", str(self.ws), "--host", self.host,
                                      "--port", str(self.port), *self.args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the app exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("the app did not start")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)


@pytest.fixture
def campaign(tmp_path):
    return make_campaign(tmp_path)


def sign_in(url: str, name: str | None = None, token: str | None = None) -> tuple[httpx.Client, str]:
    """An HTTP client signed in, and its CSRF token."""
    client = httpx.Client(base_url=url, timeout=30)
    form = client.get("/signin").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    r = client.post("/signin", data={"csrf": csrf, **({"token": token} if token else {"name": name})})
    assert r.status_code == 303, r.text
    page = client.get("/").text
    return client, re.search(r'name="csrf" content="([^"]+)"', page).group(1)


def tables(ws_path: Path) -> tuple[list, list]:
    with Workspace.open(ws_path) as ws:
        merge(ws)
        annotations = ws.fetchall("SELECT annotator, query_id, item_id, label, note FROM annotations ORDER BY ALL")
        judgments = ws.fetchall("SELECT query_id, item_id, label, extra->>'source' FROM judgments ORDER BY ALL")
    return annotations, judgments


# -- the store: resolution, undo, exactly once ---------------------------------------------------

def test_resolve_rules():
    assert [resolve([2, 3], r) for r in ("median", "majority", "review")] == [2, 2, None]
    assert [resolve([1, 3, 3], r) for r in ("median", "majority", "review")] == [3, 3, None]
    assert [resolve([1, 1, 3], r) for r in ("median", "majority", "review")] == [1, 1, None]
    assert resolve([1, 2, 3, 3, 2], "majority") == 2          # a tie between 2 and 3: the median
    assert resolve([3, 3], "review") == 3


def test_merge_applies_each_action_once_and_never_replaces_an_imported_label(campaign):
    journal = Journal(campaign / JOURNAL_NAME)
    journal.record("ana", "judge", "q0", "i0", label=1, note="faded", seconds=2.5, event_id="a-1")
    assert journal.record("ana", "judge", "q0", "i0", label=1, event_id="a-1").seq == 1     # a retry: same event
    with pytest.raises(Conflict):
        journal.record("ana", "judge", "q0", "i0", label=2)                                 # judged already
    journal.record("bob", "judge", "q0", "i0", label=3)
    journal.record("ana", "judge", "q0", "i29", label=1)        # imported as 3: that judgment stays
    journal.record("ana", "skip", "q0", "i1")
    journal.record("bob", "judge", "q0", "i2", label=2)
    with Workspace.open(campaign) as ws:
        assert merge(ws) == 5 and merge(ws) == 0
        assert ws.fetchall("SELECT annotator, query_id, item_id, label, note, seconds FROM annotations ORDER BY ALL") == [
            ("ana", "q0", "i0", 1, "faded", 2.5), ("ana", "q0", "i29", 1, None, None), ("bob", "q0", "i0", 3, None, None),
            ("bob", "q0", "i2", 2, None, None)]
        assert ws.fetchall("SELECT query_id, item_id, label, extra->>'source' FROM judgments ORDER BY ALL") == [
            ("q0", "i0", 1, "annotation"), ("q0", "i2", 2, "annotation"), ("q0", "i29", 3, None)]
        assert journal.undo("bob").pair == ("q0", "i2")
        assert journal.undo("bob", "b-undo").pair == ("q0", "i0")
        assert journal.undo("bob", "b-undo").pair == ("q0", "i0")          # a retried undo undoes nothing more
        merge(ws)
        assert ws.fetchall("SELECT annotator, item_id FROM annotations ORDER BY ALL") == [("ana", "i0"), ("ana", "i29")]
        assert ws.fetchall("SELECT item_id, label FROM judgments ORDER BY ALL") == [("i0", 1), ("i29", 3)]
        journal.record("bob", "judge", "q0", "i0", label=3)
        journal.record("cy", "judge", "q0", "i0", label=3)
        set_rule(ws, journal, "review")                                    # 1, 3, 3: no agreement, left out
        assert ws.fetchall("SELECT item_id, label FROM judgments ORDER BY ALL") == [("i29", 3)]
        set_rule(ws, journal, "majority")
        assert ws.fetchall("SELECT item_id, label FROM judgments ORDER BY ALL") == [("i0", 3), ("i29", 3)]
    with pytest.raises(Conflict):
        journal.undo("dan")
    journal.close()


def test_overlap_sends_that_share_of_pairs_to_two_annotators(campaign, tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    pairs = [Pair(f"q{n % 50}", f"i{n}", "q", {}) for n in range(1000)]
    alone = Campaign(pairs, journal, overlap=0.0)
    for who in ("ana", "bob"):
        for _ in range(300):
            held = alone.hand_out(who)
            alone.record(who, "judge", *held[0].key, label=1)
    seen = {who: {e.pair for e in journal.live(who)} for who in ("ana", "bob")}
    assert len(seen["ana"]) == len(seen["bob"]) == 300 and not seen["ana"] & seen["bob"]
    shared = Campaign(pairs, Journal(tmp_path / "k.sqlite"), overlap=0.2)
    assert 0.15 < sum(n == 2 for n in shared.need) / len(pairs) < 0.25
    journal.close()


def test_the_agreement_page_lays_out_the_report_escaped():
    from relkit.annotation.agreement import AgreementReport, AnnotatorStats, Comparison
    from relkit.annotation.views import environment
    from relkit.annotation.auth import Session

    levels = ["bad", "good"]
    pair = Comparison.of("ana", "<b>bob</b>", [1, 1, 2, 2, 2, 1], [1, 2, 2, 2, 2, 1], 2)
    teacher = Comparison.of("ana", "teacher t", [1, 2], [1, 2], 2)
    ana = AnnotatorStats("ana", 6, 0.5, 12.0, 4.25, None, None, pair, teacher)
    bob = AnnotatorStats("<b>bob</b>", 6, 1.0, 6.0, None, None, None, None, None)
    report = AgreementReport(levels, [ana, bob], [pair], 0.4, 6, 6, "t").to_dict()
    html = environment().get_template("agreement.html").render(session=Session("ana", "x"), report=report, review=1)
    assert "<b>bob" not in html and html.count("&lt;b&gt;bob&lt;/b&gt;") == 3  # two tables and a matrix caption
    assert "alpha (ordinal):\n<strong>0.400</strong> on 6 pairs" in html
    assert ("<tr><td>ana</td><td>6</td><td>0:30:00</td>\n<td>12</td><td>4.2</td>"
            f'<td>{pair.kappa:.3f} <span class="n">(6)</span></td><td>1.000 <span class="n">(2)</span></td></tr>') in html
    assert "<td>1:00:00</td>\n<td>6</td><td>–</td><td>–</td>" in html  # unknown figures show as a dash
    assert f"<td>6</td><td>{pair.kappa:.3f}</td>\n<td>83.3%</td><td>0.17</td>" in html
    assert html.count('<figure class="matrix">') == 2  # ana against bob, ana against the teacher
    assert '<tr><th title="bad">1 bad</th><td>2</td><td>1</td></tr>' in html
    assert "1 pair where annotators disagree" in html


# -- the app in a browser ---------------------------------------------------------------------------


def open_page(browser, url: str, name: str):
    context = browser.new_context()
    page = context.new_page()
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url + "/")
    page.fill("input[name=name]", name)
    page.click("text=sign in")
    page.wait_for_selector("#stage article.pair")
    return page, problems


def on_screen(page) -> tuple[str, str]:
    article = page.locator("#stage article.pair")
    return article.get_attribute("data-query-id"), article.get_attribute("data-item-id")


def saved(page) -> None:
    page.wait_for_selector("body[data-pending='0']", state="attached", timeout=30000)


def test_an_annotator_judges_by_keyboard_undoes_and_skips(campaign, browser, tmp_path):
    guidelines = tmp_path / "guide.md"
    guidelines.write_text("# How to judge\n\n**good**: the item is what was asked.\n\n<script>window.guided = 1</script>\n")
    app = App(campaign, "--guidelines", str(guidelines), "--goal", "20").start()
    try:
        page, problems = open_page(browser, app.url, "ana")
        assert page.locator(".guidelines strong").inner_text() == "good"
        assert "<script>window.guided = 1</script>" in page.locator(".guidelines").inner_text()
        title = page.locator("#stage .title").inner_text()
        assert re.fullmatch(r"item \d+ <script>window\.pwned = \d+</script>", title)       # shown as text
        assert '<b>oak</b> & "pine"' in page.locator("#stage .description").inner_text()
        assert page.locator("#stage script, #stage b").count() == 0
        page.keyboard.press("?")
        assert page.locator("#help").is_visible()
        page.keyboard.press("?")
        assert page.locator("#help").is_hidden()
        done = {}
        for n in range(10):
            pair = on_screen(page)
            assert pair not in done                      # never shown twice
            if n == 4:                                   # a note for the fifth pair
                page.keyboard.press("n")
                page.keyboard.type("the photo is blurry")
                page.keyboard.press("Enter")
            label = 1 + n % 3
            page.keyboard.press(str(label))
            done[pair] = label
            assert on_screen(page) != pair               # the next pair is there at once, before the save
        saved(page)
        assert page.locator("#progress-text").inner_text() == "10 / 20"
        page.keyboard.press("u")                         # the tenth judgment undone: its pair comes back
        saved(page)
        assert on_screen(page) == pair and page.locator("#progress-text").inner_text() == "9 / 20"
        del done[pair]
        page.keyboard.press("s")                         # ... and is skipped
        saved(page)
        assert on_screen(page) not in done and on_screen(page) != pair
        assert page.evaluate("window.pwned === undefined && window.guided === undefined")
        assert problems == []

        status = relkit("status", "-w", str(campaign))                      # the CLI works meanwhile
        assert status.returncode == 0, status.stderr
        assert re.search(r"judgments\s+10\b", status.stdout)             # 9 judged here, 1 imported
        assert re.search(r"annotations\s+9 by 1 annotator *$", status.stdout, re.M)
        annotations, judgments = tables(campaign)
        notes = {(q, i): note for _, q, i, _, note in annotations}
        assert [(q, i, label) for _, q, i, label, _ in annotations] == sorted((q, i, lb) for (q, i), lb in done.items())
        assert {a for a, *_ in annotations} == {"ana"}
        assert list(notes.values()).count("the photo is blurry") == 1 and list(notes.values()).count(None) == 8
        assert judgments == sorted([(q, i, lb, "annotation") for (q, i), lb in done.items()] + [("q0", "i29", 3, None)])
        skipped = [e.pair for e in Journal(campaign / JOURNAL_NAME).live("ana") if e.action == "skip"]
        assert skipped == [pair]
    finally:
        app.stop()


def test_two_annotators_judge_overlapping_pairs(campaign, browser):
    app = App(campaign, "--overlap", "1", "--resolve", "median").start()
    try:
        ana, ana_problems = open_page(browser, app.url, "ana")
        bob, bob_problems = open_page(browser, app.url, "bob")
        given = {"ana": {}, "bob": {}}
        for n in range(6):
            for who, page, label in (("ana", ana, 3), ("bob", bob, 1 + n % 2)):
                given[who][on_screen(page)] = label
                page.keyboard.press(str(label))
        saved(ana)
        saved(bob)
        assert set(given["ana"]) == set(given["bob"])     # overlap 1: every pair to both
        bob.keyboard.press("u")                          # bob's undo is bob's: ana's judgments stay
        saved(bob)
        undone = on_screen(bob)
        del given["bob"][undone]
        assert ana_problems == bob_problems == []
        # bob cannot change ana's judgments through the API either
        client, csrf = sign_in(app.url, "bob")
        r = client.post("/api/judge", headers={"X-CSRF-Token": csrf},
                        json={"event_id": uuid.uuid4().hex, "query_id": undone[0], "item_id": undone[1], "label": 3})
        assert r.status_code == 200                      # his own judgment of the pair he undid
        given["bob"][undone] = 3
        stale = client.post("/api/judge", json={"event_id": uuid.uuid4().hex, "query_id": "q1", "item_id": "i5",
                                                "label": 1})
        assert stale.status_code == 403                  # no CSRF token
        forged = client.post("/api/judge", headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
                             json={"event_id": uuid.uuid4().hex, "query_id": "q1", "item_id": "i5", "label": 1})
        assert forged.status_code == 403
        stranger = httpx.post(app.url + "/api/undo", json={"event_id": uuid.uuid4().hex})
        assert stranger.status_code == 401
        assert httpx.get(app.url + "/agreement").status_code == 401
        assert client.get("/agreement").status_code == 200
    finally:
        app.stop()
    annotations, judgments = tables(campaign)
    assert sorted((a, q, i, lb) for a, q, i, lb, _ in annotations) == sorted(
        (who, q, i, lb) for who, labels in given.items() for (q, i), lb in labels.items())
    expected = {pair: resolve([given["ana"][pair], given["bob"][pair]], "median") for pair in given["ana"]}
    assert {(q, i): lb for q, i, lb, source in judgments if source == "annotation"} == expected
    disagree = sum(given["ana"][p] != given["bob"][p] for p in given["ana"])
    status = relkit("status", "-w", str(campaign))
    assert f"annotations  12 by 2 annotators ({disagree} pairs they disagree on)" in re.sub(r"[ ]{2,}", "  ", status.stdout)


# -- killed and restarted; tokens beyond loopback ---------------------------------------------------

def test_no_judgment_lost_or_doubled_when_the_app_is_killed(campaign):
    app = App(campaign, "--overlap", "0").start()
    sent, acknowledged = [], []
    stop = threading.Event()
    try:
        client, csrf = sign_in(app.url, "ana")

        def annotate():
            pairs = client.get("/api/pairs").json()["cards"]
            while not stop.is_set() and pairs:
                body = {"event_id": uuid.uuid4().hex, "query_id": pairs[0]["query_id"],
                        "item_id": pairs[0]["item_id"], "label": 2}
                sent.append(body)
                while not stop.is_set():
                    try:
                        r = client.post("/api/judge", headers={"X-CSRF-Token": csrf}, json=body)
                        r.raise_for_status()
                        acknowledged.append(body["event_id"])
                        pairs = r.json()["cards"]
                        break
                    except httpx.HTTPError:
                        time.sleep(0.1)                  # the app is down: the same action again

        worker = threading.Thread(target=annotate)
        worker.start()
        wait_for(lambda: len(acknowledged) >= 8)
        app.stop(signal.SIGKILL)                         # mid-stream, no shutdown
        killed_at = len(acknowledged)
        app.start()                                      # the same port; the session cookie still holds
        wait_for(lambda: len(acknowledged) >= 20)
        stop.set()
        worker.join()
        again = client.post("/api/judge", headers={"X-CSRF-Token": csrf}, json=sent[3])   # a late duplicate
        assert again.status_code == 200
    finally:
        stop.set()
        app.stop()
    assert killed_at < 20
    answered = {b["event_id"] for b in sent} & set(acknowledged)
    annotations, judgments = tables(campaign)
    assert len(annotations) == len({(b["query_id"], b["item_id"]) for b in sent if b["event_id"] in answered}) == len(answered)
    assert len([j for j in judgments if j[3] == "annotation"]) == len(answered)
    assert len(Journal(campaign / JOURNAL_NAME).live("ana")) == len(answered)


def wait_for(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_app_takes_judgments_while_another_process_holds_the_workspace(campaign):
    app = App(campaign, "--overlap", "0").start()
    try:
        client, csrf = sign_in(app.url, "ana")
        # another process writes the workspace until told to let go, then says how many annotations it holds
        holder = subprocess.Popen([sys.executable, "-c", "import sys; from relkit import Workspace; "
                                   "ws = Workspace.open(sys.argv[1]); ws.count('items'); print('held', flush=True); "
                                   "sys.stdin.readline(); "
                                   "print(ws.count('annotations') if ws.has_table('annotations') else 0, flush=True); "
                                   "ws.close()",
                                   str(campaign)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        cards, answers = client.get("/api/pairs").json()["cards"], []
        for _ in range(5):
            r = client.post("/api/judge", headers={"X-CSRF-Token": csrf}, json={
                "event_id": uuid.uuid4().hex, "query_id": cards[0]["query_id"], "item_id": cards[0]["item_id"],
                "label": 1})
            answers.append(r.status_code)
            cards = r.json()["cards"]
        journal = Journal(campaign / JOURNAL_NAME)
        journaled = [(e.annotator, e.action, e.label) for e in journal.live()]
        journal.close()
        assert holder.poll() is None                             # still holding the workspace
        holder.stdin.write("let go\n")
        holder.stdin.flush()
        in_workspace_while_held = int(holder.stdout.readline())
        assert holder.wait(timeout=60) == 0
        # answered and journaled while DuckDB was held elsewhere, nothing written to the workspace meanwhile
        assert answers == [200] * 5 and journaled == [("ana", "judge", 1)] * 5 and in_workspace_while_held == 0

        def merged() -> int:                                     # the app merges once the workspace is free
            with Workspace.open(campaign, read_only=True) as ws:
                return ws.count("annotations") if ws.has_table("annotations") else 0
        wait_for(lambda: merged() == 5)
    finally:
        app.stop()


def test_beyond_loopback_annotators_sign_in_with_a_token(campaign):
    refused = relkit("annotate", "-w", str(campaign), "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 2 and "--add-annotator" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    added = relkit("annotate", "-w", str(campaign), "--add-annotator", "ana")
    assert added.returncode == 0, added.stderr
    token = re.search(r"token (\S+)", added.stdout).group(1)
    assert token.encode() not in (campaign / JOURNAL_NAME).read_bytes()          # only its hash is kept
    app = App(campaign, host="0.0.0.0").start()
    try:
        client = httpx.Client(base_url=app.url)
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/signin").text).group(1)
        wrong = client.post("/signin", data={"csrf": csrf, "name": "ana", "token": "guess"})
        assert wrong.status_code == 200 and "unknown token" in wrong.text
        assert client.get("/").status_code == 303
        signed_in, page_csrf = sign_in(app.url, token=token)
        # the session is ana's (her name, base64, in the cookie), and the page's CSRF token is the
        # HMAC-SHA256 of ("csrf", name, the cookie's nonce) under the secret the journal keeps
        name, nonce, _ = signed_in.cookies[COOKIE].split(".")
        assert name == "YW5h"
        journal = Journal(campaign / JOURNAL_NAME)
        mac = hmac.new(journal.setting("secret").encode(), f"csrf\x1fana\x1f{nonce}".encode(), hashlib.sha256)
        assert page_csrf == base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")
        pair = signed_in.get("/api/pairs").json()["cards"][0]
        judged = signed_in.post("/api/judge", headers={"X-CSRF-Token": page_csrf}, json={
            "event_id": uuid.uuid4().hex, "query_id": pair["query_id"], "item_id": pair["item_id"], "label": 2})
        assert judged.status_code == 200
        assert [(e.annotator, e.pair, e.label) for e in journal.live()] == [
            ("ana", (pair["query_id"], pair["item_id"]), 2)]
        journal.close()
    finally:
        app.stop()


@pytest.mark.parametrize("args, message", [
    (["--resolve", "mean"], "--resolve must be one of median, majority, review"),
    (["--queue", "uncertain=x"], "--queue 'uncertain=x': queue weights: 'uncertain=x' is not STRATEGY=NUMBER"),
])
def test_bad_options_are_one_line_errors(campaign, args, message):
    r = relkit("annotate", "-w", str(campaign), "--port", str(free_port()), *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
