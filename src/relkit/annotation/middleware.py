"""The annotation app's ASGI middleware: a state-changing request from another site's page is
refused, and every answer carries headers that keep its pages from loading anything from
elsewhere, being framed, sniffed or cached."""
from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

from relkit.annotation.auth import same_origin

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "x-frame-options": "DENY",
           "referrer-policy": "same-origin", "cache-control": "no-store"}
_RAW = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in HEADERS.items()]


class Guard:
    """ASGI middleware: 403 for a request other than GET or HEAD whose Origin (else Referer) is not
    this app; `HEADERS` on every other answer, in place of any the app set."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] not in ("GET", "HEAD") and not same_origin(HTTPConnection(scope)):
            refused = JSONResponse({"detail": "cross-origin request refused"}, status_code=403)
            return await refused(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower().decode("latin-1") not in HEADERS]
                message = {**message, "headers": kept + _RAW}
            await send(message)
        await self.app(scope, receive, with_headers)
