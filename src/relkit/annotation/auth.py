"""Who is asking: signed session cookies, CSRF tokens, and the checks every request goes through.

On loopback an annotator signs in with a name. Beyond loopback each annotator signs in with the
token `relkit annotate --add-annotator NAME` printed once (the journal keeps only its hash). The
session cookie is `name.nonce.signature`, signed with a secret kept in the journal, so sessions
survive a restart of the app; the CSRF token every form and API call carries is derived from the
same session, so another site cannot forge one.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection

from relkit.net import is_loopback  # noqa: F401 - who signs in with a token: anyone beyond loopback

COOKIE = "relkit_annotator"
PRE_COOKIE = "relkit_signin"          # ties the sign-in form to the browser that loaded it


@dataclass(frozen=True)
class Session:
    annotator: str
    csrf: str


class Signer:
    def __init__(self, secret: str):
        self._key = secret.encode()

    def sign(self, *parts: str) -> str:
        mac = hmac.new(self._key, "\x1f".join(parts).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def cookie(self, annotator: str) -> str:
        name = base64.urlsafe_b64encode(annotator.encode()).decode().rstrip("=")
        nonce = secrets.token_urlsafe(12)
        return f"{name}.{nonce}.{self.sign('session', annotator, nonce)}"

    def session(self, cookie: str | None) -> Session | None:
        try:
            name, nonce, mac = (cookie or "").split(".")
            annotator = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self.sign("session", annotator, nonce)):
            return None
        return Session(annotator, self.sign("csrf", annotator, nonce))

    def signin_token(self, pre: str) -> str:
        return self.sign("signin", pre)


def same_origin(request: HTTPConnection) -> bool:
    """A state-changing request must come from this app's own pages (Origin, else Referer, matches)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True      # not a browser (curl, a script): no ambient cookie was sent by a third party
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1].split("/", 1)[0] == host


def require_csrf(request: Request, session: Session, given: str | None) -> None:
    if not same_origin(request):
        raise HTTPException(403, "cross-origin request refused")
    if not given or not hmac.compare_digest(given, session.csrf):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page")
