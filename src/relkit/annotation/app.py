"""`relkit annotate`: people judge (query, item) pairs in a browser, one at a time, by keyboard.

The pages are rendered on the server (Jinja2, autoescaped); a small script swaps in the next pair,
which is already in the page, the moment a key is pressed, and saves the judgment behind it.
Every action goes to the journal (store.py) before it is answered; the journal is merged into the
workspace every few seconds when the workspace is free, so the app runs alongside `relkit teach`,
`label` or `eval`.

    app = create_app("my-ws", AppConfig(overlap=0.2))
"""
from __future__ import annotations

import logging
import os
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from relkit.annotation import store
from relkit.annotation.auth import COOKIE, PRE_COOKIE, Session, Signer, require_csrf, require_session, same_origin
from relkit.annotation.campaign import Campaign, Pair
from relkit.errors import RelkitError

logger = logging.getLogger(__name__)
HERE = Path(__file__).parent
GUIDELINES_META = "annotation_guidelines"
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass
class AppConfig:
    """How a labeling campaign runs (the options of `relkit annotate`)."""

    overlap: float = 0.2               # share of pairs two annotators judge
    resolve: str = "median"            # median | majority | review: the label of a pair judged twice
    goal: int = 100                    # judgments per annotator the progress bar counts toward
    guidelines: str | None = None      # markdown; None: the workspace's (the last ones given)
    weights: dict[str, float] = field(default_factory=lambda: {"cold": 1.0})   # queue strategies
    model: str | None = None           # the teacher or student the queue asks
    seed: int = 0
    require_tokens: bool = False       # beyond loopback: sign in with a token, not a name
    merge_seconds: float = 2.0         # how often the journal is merged into the workspace


class Judgment(BaseModel):
    event_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    query_id: str = Field(max_length=1000)
    item_id: str = Field(max_length=1000)
    label: int | None = None
    note: str | None = Field(default=None, max_length=2000)
    seconds: float | None = Field(default=None, ge=0, le=86400)


class Undo(BaseModel):
    event_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


class Merger:
    """Merges the journal into the workspace in short write sessions, retrying while it is busy."""

    def __init__(self, path: Path, journal: store.Journal, every: float):
        self.path, self.journal, self.every = path, journal, every
        self.merged = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="relkit-annotation-merge", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.merge_now(wait=5.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            if self.journal.last_seq() > self.merged:
                self.merge_now(wait=0.2)

    def merge_now(self, wait: float) -> bool:
        """One merge, waiting up to `wait` seconds for the workspace; False if it stayed busy."""
        from relkit.workspace import DB_NAME, Workspace, connect

        with self._lock:
            last = self.journal.last_seq()
            try:
                con = connect(self.path / DB_NAME, wait=wait)
            except RelkitError:
                return False
            ws = Workspace(path=self.path, scale=None, _con=con)
            try:
                store._merge(ws, self.journal)
                self.merged = last
                return True
            except Exception:   # noqa: BLE001 - the journal keeps everything; the next round tries again
                logger.exception("merging the annotation journal into %s failed; retrying later", self.path)
                return False
            finally:
                ws.close()


def environment():
    """The app's templates, every value escaped unless marked safe."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))


def _guidelines_html(text: str | None) -> str:
    from markdown_it import MarkdownIt

    # html off: markup typed into the guidelines is shown as text, never run
    return MarkdownIt("commonmark", {"html": False}).render(text or "")


@dataclass
class Prepared:
    """What the app reads from the workspace when it starts."""

    journal: store.Journal
    campaign: Campaign
    scale: object
    guidelines: str | None


def prepare(path: Path, config: AppConfig) -> Prepared:
    """Merge the journal, keep the rule and guidelines in the workspace, and read the queue's pairs;
    the workspace is closed again before the app answers."""
    from relkit.workspace import Workspace

    store.resolve([1], config.resolve)
    journal = store.Journal(path / store.JOURNAL_NAME)
    try:
        if config.require_tokens and not journal.annotators():
            raise RelkitError(f"beyond loopback annotators sign in with a token, and {path} has none yet: "
                              f"add one with `relkit annotate --add-annotator NAME -w {path}`")
        with Workspace.open(path) as ws:
            store.set_rule(ws, journal, config.resolve)
            if config.guidelines is not None:
                ws.set_meta(GUIDELINES_META, config.guidelines)
            campaign = Campaign.load(ws, journal, config.weights, config.model, config.overlap, config.seed)
            return Prepared(journal, campaign, ws.scale, ws.get_meta(GUIDELINES_META))
    except BaseException:
        journal.close()
        raise


def create_app(workspace: str | os.PathLike, config: AppConfig | None = None,
               prepared: Prepared | None = None) -> FastAPI:
    """The annotation app of a workspace (served by `relkit annotate`); `prepared` is what
    `prepare` read, else the app reads it when it starts."""
    config = config or AppConfig()
    path = Path(workspace)
    templates = environment()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = prepared or prepare(path, config)
        merger = Merger(path, loaded.journal, config.merge_seconds)
        merger.merged = loaded.journal.last_seq()
        app.state.__dict__.update(journal=loaded.journal, campaign=loaded.campaign, scale=loaded.scale,
                                  merger=merger, signer=Signer(loaded.journal.setting("secret")),
                                  guidelines=_guidelines_html(loaded.guidelines))
        merger.start()
        logger.debug("annotating %d pairs of %s", len(loaded.campaign.pairs), path)
        try:
            yield
        finally:
            merger.stop()
            loaded.journal.close()

    app = FastAPI(title="relkit annotate", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def headers(request: Request, call_next):
        if request.method not in ("GET", "HEAD") and not same_origin(request):
            return JSONResponse({"detail": "cross-origin request refused"}, status_code=403)
        response = await call_next(request)
        response.headers.update({"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                 "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
                                 "Cache-Control": "no-store"})
        return response

    def page(name: str, **context) -> HTMLResponse:
        return HTMLResponse(templates.get_template(name).render(**context))

    def card(request: Request, pair: Pair) -> dict:
        image = pair.item.get("image")
        if image and not image.startswith(("http://", "https://")):
            image = str(request.url_for("image", item_id=pair.item_id).path)
        html = templates.get_template("_card.html").render(pair=pair, image=image, fields=_other_fields(pair))
        return {"query_id": pair.query_id, "item_id": pair.item_id, "html": html, "image": image}

    def state(request: Request, session: Session, first=None) -> dict:
        campaign: Campaign = request.app.state.campaign
        cards = [card(request, p) for p in campaign.hand_out(session.annotator, first)]
        return {"cards": cards, "done": campaign.progress(session.annotator), "goal": config.goal}

    @app.get("/signin", response_class=HTMLResponse)
    def signin_form(request: Request, error: str | None = None):
        pre = request.cookies.get(PRE_COOKIE) or os.urandom(12).hex()
        response = page("signin.html", tokens=config.require_tokens, error=error,
                        csrf=request.app.state.signer.signin_token(pre))
        response.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="strict")
        return response

    @app.post("/signin")
    async def signin(request: Request):
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        pre = request.cookies.get(PRE_COOKIE) or ""
        if not pre or form.get("csrf") != request.app.state.signer.signin_token(pre):
            raise HTTPException(403, "the sign-in form expired: reload it")
        if config.require_tokens:
            name = request.app.state.journal.annotator_for_token(form.get("token", ""))
            if name is None:
                return signin_form(request, "unknown token")
        else:
            try:
                name = store.check_name(form.get("name", "").strip())
            except RelkitError as e:
                return signin_form(request, str(e))
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, request.app.state.signer.cookie(name), httponly=True, samesite="strict",
                            max_age=30 * 86400)
        return response

    @app.post("/signout")
    async def signout(request: Request, session: Session = Depends(require_session)):
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        require_csrf(request, session, (form.get("csrf") or [None])[0])
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/", response_class=HTMLResponse)
    def annotate(request: Request):
        session = request.app.state.signer.session(request.cookies.get(COOKIE))
        if session is None:
            return RedirectResponse("/signin", status_code=303)
        scale = request.app.state.scale
        return page("annotate.html", session=session, levels=list(enumerate(scale.names, start=1)),
                    guidelines=request.app.state.guidelines, state=state(request, session))

    @app.get("/api/pairs")
    def pairs(request: Request, session: Session = Depends(require_session)):
        return state(request, session)

    def act(request: Request, session: Session, body: Judgment, action: str) -> dict:
        require_csrf(request, session, request.headers.get("x-csrf-token"))
        if action == "judge" and not (body.label and 1 <= body.label <= request.app.state.scale.k):
            raise HTTPException(422, f"label must be a level from 1 to {request.app.state.scale.k}")
        try:
            request.app.state.campaign.record(session.annotator, action, body.query_id, body.item_id,
                                              label=body.label if action == "judge" else None,
                                              note=(body.note or "").strip() or None, seconds=body.seconds,
                                              event_id=body.event_id)
        except store.Conflict as e:
            raise HTTPException(409, str(e)) from None
        except RelkitError as e:
            raise HTTPException(404, str(e)) from None
        return state(request, session)

    @app.post("/api/judge")
    def judge(request: Request, body: Judgment, session: Session = Depends(require_session)):
        return act(request, session, body, "judge")

    @app.post("/api/skip")
    def skip(request: Request, body: Judgment, session: Session = Depends(require_session)):
        return act(request, session, body, "skip")

    @app.post("/api/undo")
    def undo(request: Request, body: Undo, session: Session = Depends(require_session)):
        require_csrf(request, session, request.headers.get("x-csrf-token"))
        try:
            undone = request.app.state.campaign.undo(session.annotator, body.event_id)
        except store.Conflict as e:
            raise HTTPException(409, str(e)) from None
        return state(request, session, first=undone.pair)

    @app.get("/image/{item_id}", name="image")
    def image(item_id: str, request: Request, session: Session = Depends(require_session)):
        source = request.app.state.campaign.images.get(item_id)
        file = Path(source) if source and not urlparse(source).scheme else None
        if file is None or file.suffix.lower() not in IMAGE_TYPES or not file.is_file():
            raise HTTPException(404, "no image")
        return FileResponse(file, media_type=IMAGE_TYPES[file.suffix.lower()])

    @app.get("/agreement", response_class=HTMLResponse)
    def agreement(request: Request, session: Session = Depends(require_session)):
        from relkit.workspace import Workspace

        request.app.state.merger.merge_now(wait=30.0)
        with Workspace.open(path) as ws:
            report = _agreement(ws)
            review = store.review_pairs(ws)
        return page("agreement.html", session=session, report=report, review=len(review))

    @app.get("/healthz")
    def healthz(request: Request):
        return {"pairs": len(request.app.state.campaign.pairs), "journal": request.app.state.journal.last_seq()}

    return app


def _agreement(ws) -> dict | None:
    try:
        from relkit.annotation.agreement import agreement_report
    except ImportError:   # the agreement metrics are not part of this build
        return None
    return agreement_report(ws).to_dict()


def _other_fields(pair: Pair) -> list[tuple[str, str]]:
    """The item's text fields beyond title, description and image, as (name, text)."""
    item, out = pair.item, []
    for name in ("caption", "board_titles", "link_title", "link_description", "engaged_queries", "language"):
        value = item.get(name)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        if value:
            out.append((name.replace("_", " "), str(value)))
    for name, value in (item.get("extra") or {}).items():
        if value not in (None, ""):
            out.append((str(name), value if isinstance(value, str) else str(value)))
    return out


def serve(workspace: str | os.PathLike, config: AppConfig, host: str = "127.0.0.1", port: int = 8001,
          prepared: Prepared | None = None) -> None:
    """Run the app until interrupted."""
    import uvicorn

    prepared = prepared or prepare(Path(workspace), config)
    uvicorn.run(create_app(workspace, config, prepared), host=host, port=port, log_level="warning",
                access_log=False)
