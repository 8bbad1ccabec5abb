"""GET /: the page an annotator judges on; /agreement: how far annotators agree; /image/ID: an item's
picture from a local file."""
from pathlib import Path
from urllib.parse import urlparse

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from relkit.annotation import store
from relkit.annotation.dependencies import Running, SignedIn, current_session
from relkit.annotation.views import held, page

router = APIRouter()
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp"}


@router.get("/", response_class=HTMLResponse)
def annotate(request: Request, annotation: Running):
    session = current_session(request)
    if session is None:
        return RedirectResponse("/signin", status_code=303)
    return page(annotation, "annotate.html", session=session,
                levels=list(enumerate(annotation.scale.names, start=1)), guidelines=annotation.guidelines,
                state=held(annotation, request, session))


@router.get("/image/{item_id}", name="image")
def image(item_id: str, annotation: Running, session: SignedIn):
    source = annotation.campaign.images.get(item_id)
    file = Path(source) if source and not urlparse(source).scheme else None
    if file is None or file.suffix.lower() not in IMAGE_TYPES or not file.is_file():
        raise HTTPException(404, "no image")
    return FileResponse(file, media_type=IMAGE_TYPES[file.suffix.lower()])


@router.get("/agreement", response_class=HTMLResponse)
def agreement(annotation: Running, session: SignedIn):
    from relkit.workspace import Workspace

    annotation.merger.merge_now(wait=30.0)   # the report counts every judgment made so far
    with Workspace.open(annotation.path) as ws:
        report = agreement_report(ws)
        review = store.review_pairs(ws)
    return page(annotation, "agreement.html", session=session, report=report, review=len(review))


def agreement_report(ws) -> dict | None:
    try:
        from relkit.annotation.agreement import agreement_report as report
    except ImportError:   # the agreement metrics are not part of this build
        return None
    return report(ws).to_dict()
