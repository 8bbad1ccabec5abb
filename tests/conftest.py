import csv
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

import duckdb  # noqa: E402,F401  (loaded first, as before relkit.workspace imported it lazily)
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from relkit import LabelScale, SplitConfig, Workspace, import_file, split_queries  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_FINISHED: dict[str, int] = {}


def pytest_sessionfinish(session, exitstatus):
    _FINISHED["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave as soon as pytest is done, with its exit status, without the interpreter's teardown.
    This one process has loaded torch, ONNX Runtime, DuckDB, Ray's driver (with its gRPC threads)
    and more by the end of the suite, and their native teardown at interpreter exit has crashed
    (SIGSEGV) once in a while after every test had passed and the summary was printed. Every
    fixture has been torn down by now; nothing a test checks runs after this."""
    if "status" in _FINISHED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_FINISHED["status"])
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def ws(tmp_path):
    with Workspace.create(tmp_path / "ws") as workspace:
        yield workspace


@pytest.fixture
def ws3(tmp_path):
    """A workspace with a 3-level scale, gains 0, 1, 3."""
    scale = LabelScale(names=("bad", "fair", "good"), gains=(0, 1, 3))
    with Workspace.create(tmp_path / "ws3", scale) as workspace:
        yield workspace


def relkit_command(*args) -> list[str]:
    """The command line of `relkit ARGS`, run by this interpreter."""
    return [sys.executable, "-m", "relkit", *map(str, args)]


def relkit(*args, cwd=None, env=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`relkit ARGS` in a process of its own, as from a shell: exit status, stdout and stderr as text.
    `env` adds to this process's environment; 200 columns, so that tables do not wrap."""
    return subprocess.run(relkit_command(*args), capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=timeout)


def free_port() -> int:
    """A TCP port free on loopback now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served on a free loopback port in a thread; yields its OpenAI-style base URL (.../v1)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


class RuleChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint whose models answer by rule: GET lists `models`, POST
    answers a chat completion whose message is `answer(body)`, with `prompt_tokens` in its usage."""
    models: tuple[str, ...] = ()
    prompt_tokens = 10

    def log_message(self, *args):
        pass

    def answer(self, body: dict) -> str:
        raise NotImplementedError

    def _json(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._json({"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "x"}
                                               for m in self.models]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": self.answer(body)}}
        self._json({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice],
                    "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": 1,
                              "total_tokens": self.prompt_tokens + 1}})


def write_csv(path: Path, header: list[str], rows: list[list], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is not here (the real datasets live in ../shared/data beside the project)")
    return path


def head_lines(src: Path, dst: Path, n_records: int) -> Path:
    """The header and first n records of a real CSV (records may span lines)."""
    with open(src, newline="", encoding="utf-8") as f, open(dst, "w", newline="", encoding="utf-8") as out:
        reader, writer = csv.reader(f), csv.writer(out)
        for i, row in enumerate(reader):
            if i > n_records:
                break
            writer.writerow(row)
    return dst


def kurtosis_df(residuals, df: int) -> float:
    """t's degrees of freedom lowered for the excess kurtosis k of `residuals` (centred per stratum):
    2 / (2 / df + k / n), the chi-square's whose variance is the sample variance's; df when k <= 0."""
    r = np.asarray(residuals, dtype=float)
    if not np.mean(r ** 2):
        return df
    k = np.mean(r ** 4) / np.mean(r ** 2) ** 2 - 3
    return df if k <= 0 else min(df, 2 / (2 / df + k / len(r)))


def write_png(path: Path, seed: int, size: tuple[int, int] = (40, 50)) -> Path:
    """A real PNG of random pixels (a different picture per seed)."""
    import numpy as np
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((*size, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(path, format="PNG")
    return path


# --- a small shop: items, judged queries and a rule teacher's labels (student and service tests) ---

COLORS = ["red", "blue", "green", "black"]
THINGS = ["chair", "table", "lamp", "hose", "drill", "door", "saw", "rug"]
ITEMS = [(f"{c}-{t}", f"{c} {t}", f"a sturdy {t} painted {c}") for c in COLORS for t in THINGS]


def level(query: str, title: str) -> int:
    """3: the item is the query's color and thing; 2: one of the two; 1: neither."""
    return 1 + len(set(query.split()) & set(title.split()))


@pytest.fixture
def shop(tmp_path):
    ws = make_shop(tmp_path)
    yield ws
    ws.close()


def make_shop(tmp_path: Path) -> Workspace:
    """32 items, 32 queries (`color thing`) each judged against 8 items, split by query."""
    ws = Workspace.create(tmp_path / "ws", LabelScale.default(3))
    import_file(ws, "items", write_csv(tmp_path / "i.csv", ["item_id", "title", "description"], ITEMS))
    rng = np.random.default_rng(0)
    judgments = []
    for c in COLORS:
        for t in THINGS:
            q = f"{c} {t}"
            for n in rng.choice(len(ITEMS), 7, replace=False).tolist() + [ITEMS.index((f"{c}-{t}", q, f"a sturdy {t} painted {c}"))]:
                judgments.append([q, ITEMS[n][0], str(level(q, ITEMS[n][1]))])
    import_file(ws, "judgments", write_csv(tmp_path / "j.csv", ["query", "item_id", "label"], judgments))
    split_queries(ws, SplitConfig(seed=3, dev=0.2, test=0.25))
    return ws


RULE_LABELS = {1: [0.8, 0.1, 0.1], 2: [0.1, 0.8, 0.1], 3: [0.1, 0.1, 0.8]}


def write_teacher_labels(ws: Workspace, name: str = "rule", by_level: dict | None = None) -> int:
    """Soft labels of every (train query, item) pair from a rule teacher, written as `relkit label`
    writes them: `by_level[rule's level]` is a pair's distribution (default 0.8 on the rule's level)."""
    rows = ws.fetchall("""SELECT q.query_id, q.query, i.item_id, i.title FROM queries q JOIN splits s USING (query_id)
                          CROSS JOIN items i WHERE s.split = 'train' ORDER BY 1, 3""")
    by_level = by_level or RULE_LABELS
    p = np.array([by_level[level(q, t)] for _, q, _, t in rows], dtype=np.float32)
    out = ws.path / "labels" / name
    out.mkdir(parents=True)
    pq.write_table(pa.table({"teacher": [name] * len(rows), "query_id": [r[0] for r in rows],
                             "item_id": [r[2] for r in rows], "p1": p[:, 0], "p2": p[:, 1], "p3": p[:, 2],
                             "expected_level": p @ np.arange(1, 4, dtype=np.float32)}), out / "shard-00000.parquet")
    return len(rows)


CHROMIUM = "/usr/bin/chromium"          # Debian's package: `make test` installs it
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Playwright, for the tests that open a page as its user does."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the browser tests drive Chromium, and {CHROMIUM} is not here: apt-get install chromium "
                    f"(make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
