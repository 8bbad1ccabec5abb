import http.server
import threading
import time

import pytest

from conftest import write_csv, write_png as png
from relkit import import_file, load_judged_pairs, split_queries
from relkit.captions import Captioner, caption_items
from tiny_models import build_blip


@pytest.fixture(scope="module")
def blip(tmp_path_factory):
    return str(build_blip(tmp_path_factory.mktemp("blip")))


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on loopback: /ok.png, /slow.png (answers after 3 s), /big.png, and 404s."""
    ok = png(tmp_path / "served.png", 7).read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/slow.png":
                time.sleep(3)
            if self.path in ("/ok.png", "/slow.png", "/big.png"):
                body = ok if self.path != "/big.png" else ok * 50
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class Counting:
    """The real captioner, counting the images it is given."""

    def __init__(self, model):
        self.inner, self.images = Captioner(model), 0

    def caption(self, images):
        self.images += len(images)
        return self.inner.caption(images)


def test_captions_are_cached_by_content_and_failures_recorded(tmp_path, ws, blip, server):
    a, b = png(tmp_path / "a.png", 1), png(tmp_path / "b.png", 2)
    (tmp_path / "copy-of-a.png").write_bytes(a.read_bytes())
    (tmp_path / "notes.png").write_text("not an image at all")
    items = [["1", "Chair", str(a)], ["2", "Chair copy", str(tmp_path / "copy-of-a.png")], ["3", "Lamp", str(b)],
             ["4", "Gone", str(tmp_path / "missing.png")], ["5", "Text", str(tmp_path / "notes.png")],
             ["6", "Web", f"{server}/ok.png"], ["7", "Slow", f"{server}/slow.png"], ["8", "Huge", f"{server}/big.png"],
             ["9", "404", f"{server}/nothing.png"], ["10", "No image", ""]]
    import_file(ws, "items", write_csv(tmp_path / "items.csv", ["item_id", "title", "image"], items))
    counter = {}

    def factory(model):
        counter["c"] = Counting(model)
        return counter["c"]

    result = caption_items(ws, blip, batch_size=4, timeout=1.0, max_bytes=50_000,
                           captioner_factory=factory)
    assert result.items == 9 and result.failed == 5 and result.captioned == 3  # a (twice), b, the served one
    assert counter["c"].images == 3
    errors = dict(ws.fetchall("SELECT item_id, error FROM item_captions WHERE error IS NOT NULL"))
    assert errors["4"] == "no such file" and errors["5"].startswith("not an image")
    assert errors["7"] == "timed out after 1 s" and errors["8"] == "larger than 50,000 bytes"
    assert errors["9"] == "HTTP 404"
    captions = dict(ws.fetchall("SELECT item_id, caption FROM item_records WHERE caption IS NOT NULL"))
    assert set(captions) == {"1", "2", "3", "6"} and captions["1"] == captions["2"]
    from PIL import Image
    assert captions["3"] == Captioner(blip).caption([Image.open(b).convert("RGB")])[0]

    again = caption_items(ws, blip, timeout=1.0, max_bytes=50_000, captioner_factory=factory)
    assert again.unchanged == 4 and again.captioned == 0  # only the failures are tried again
    png(b, 3)  # the picture changes at the same path
    (tmp_path / "notes.png").unlink()
    ws.run("UPDATE items SET image = ? WHERE item_id = '3'", [str(tmp_path / "b2.png")])
    (tmp_path / "b2.png").write_bytes(b.read_bytes())
    third = caption_items(ws, blip, timeout=1.0, max_bytes=50_000, captioner_factory=factory)
    assert third.captioned == 1 and ws.count("captions") == 4


def test_caption_reaches_item_text(tmp_path, ws, blip):
    png(tmp_path / "a.png", 1)
    import_file(ws, "items", write_csv(tmp_path / "items.csv", ["item_id", "title", "image"],
                                       [["1", "Chair", str(tmp_path / "a.png")]]))
    import_file(ws, "judgments", write_csv(tmp_path / "j.csv", ["query", "item_id", "label"], [["chair", "1", "5"]]),
                split="test")
    split_queries(ws)
    caption_items(ws, blip)
    caption = ws.fetchone("SELECT caption FROM captions")[0]
    assert load_judged_pairs(ws, "test").item_texts() == [f"Chair\nimage: {caption}"]


def test_unknown_captioner_is_a_clear_error(tmp_path, ws):
    from relkit import RelkitError

    png(tmp_path / "a.png", 1)
    import_file(ws, "items", write_csv(tmp_path / "items.csv", ["item_id", "title", "image"],
                                       [["1", "Chair", str(tmp_path / "a.png")]]))
    with pytest.raises(RelkitError, match="cannot load the captioning model"):
        caption_items(ws, str(tmp_path / "no-model"))
