"""The API the page's script calls: GET /api/pairs, POST /api/judge, /api/skip, /api/undo (each answers
with the cards the annotator holds next), and GET /healthz."""
from fastapi import APIRouter, HTTPException, Request

from relkit.annotation import store
from relkit.annotation.auth import Session, require_csrf
from relkit.annotation.dependencies import Running, SignedIn
from relkit.annotation.schemas import Judgment, Undo
from relkit.annotation.state import Annotation
from relkit.annotation.views import held
from relkit.errors import RelkitError

router = APIRouter()


@router.get("/api/pairs")
def pairs(request: Request, annotation: Running, session: SignedIn):
    return held(annotation, request, session)


@router.post("/api/judge")
def judge(request: Request, body: Judgment, annotation: Running, session: SignedIn):
    return act(annotation, request, session, body, "judge")


@router.post("/api/skip")
def skip(request: Request, body: Judgment, annotation: Running, session: SignedIn):
    return act(annotation, request, session, body, "skip")


@router.post("/api/undo")
def undo(request: Request, body: Undo, annotation: Running, session: SignedIn):
    require_csrf(request, session, request.headers.get("x-csrf-token"))
    try:
        undone = annotation.campaign.undo(session.annotator, body.event_id)
    except store.Conflict as e:
        raise HTTPException(409, str(e)) from None
    return held(annotation, request, session, first=undone.pair)


@router.get("/healthz")
def healthz(annotation: Running):
    return {"pairs": len(annotation.campaign.pairs), "journal": annotation.journal.last_seq()}


def act(annotation: Annotation, request: Request, session: Session, body: Judgment, action: str) -> dict:
    """Journal a judgment or a skip (`action`) of the annotator's, then hand out what comes next."""
    require_csrf(request, session, request.headers.get("x-csrf-token"))
    k = annotation.scale.k
    if action == "judge" and not (body.label and 1 <= body.label <= k):
        raise HTTPException(422, f"label must be a level from 1 to {k}")
    try:
        annotation.campaign.record(session.annotator, action, body.query_id, body.item_id,
                                   label=body.label if action == "judge" else None,
                                   note=(body.note or "").strip() or None, seconds=body.seconds,
                                   event_id=body.event_id)
    except store.Conflict as e:
        raise HTTPException(409, str(e)) from None
    except RelkitError as e:
        raise HTTPException(404, str(e)) from None
    return held(annotation, request, session)
