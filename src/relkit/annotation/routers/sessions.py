"""GET and POST /signin, POST /signout: an annotator signs in with a name (on loopback) or a token."""
import os
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from relkit.annotation import store
from relkit.annotation.auth import COOKIE, PRE_COOKIE, require_csrf
from relkit.annotation.dependencies import Running, SignedIn
from relkit.annotation.state import Annotation
from relkit.annotation.views import page
from relkit.errors import RelkitError

router = APIRouter()
SESSION_SECONDS = 30 * 86400


@router.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request, annotation: Running, error: str | None = None):
    return form(annotation, request, error)


@router.post("/signin")
async def signin(request: Request, annotation: Running):
    fields = await read_form(request)
    pre = request.cookies.get(PRE_COOKIE) or ""
    if not pre or fields.get("csrf") != annotation.signer.signin_token(pre):
        raise HTTPException(403, "the sign-in form expired: reload it")
    if annotation.config.require_tokens:
        name = annotation.journal.annotator_for_token(fields.get("token", ""))
        if name is None:
            return form(annotation, request, "unknown token")
    else:
        try:
            name = store.check_name(fields.get("name", "").strip())
        except RelkitError as e:
            return form(annotation, request, str(e))
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, annotation.signer.cookie(name), httponly=True, samesite="strict",
                        max_age=SESSION_SECONDS)
    return response


@router.post("/signout")
async def signout(request: Request, session: SignedIn):
    require_csrf(request, session, (await read_form(request)).get("csrf"))
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE)
    return response


def form(annotation: Annotation, request: Request, error: str | None) -> HTMLResponse:
    """The sign-in form, its CSRF token tied to this browser by a cookie of its own."""
    pre = request.cookies.get(PRE_COOKIE) or os.urandom(12).hex()
    response = page(annotation, "signin.html", tokens=annotation.config.require_tokens, error=error,
                    csrf=annotation.signer.signin_token(pre))
    response.set_cookie(PRE_COOKIE, pre, httponly=True, samesite="strict")
    return response


async def read_form(request: Request) -> dict[str, str]:
    """The url-encoded form of the body, the first value of each field."""
    return {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
