"""The service's ASGI middleware: a body size limit enforced before parsing, and per-endpoint
request counts and latency with any exception turned into a JSON 500."""
from __future__ import annotations

import json
import logging
import time

logger = logging.getLogger(__name__)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before the app parses it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message]), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._too_large(send)
            more = message.get("more_body", False)
        return await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}],
                                             receive), send)

    async def _too_large(self, send):
        body = json.dumps({"detail": [{"loc": ["body"], "type": "too_large",
                                       "msg": f"the request body is larger than {self.limit} bytes"}]}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class Observe:
    """ASGI middleware: per-endpoint request counts and latency; an exception becomes a JSON 500
    (logged), never a traceback or a dropped connection."""

    def __init__(self, app, latency, requests):
        self.app, self.latency, self.requests = app, latency, requests

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status, started = 500, False

        async def observe(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)
        try:
            await self.app(scope, receive, observe)
        except Exception:
            logger.exception("error serving %s", scope.get("path"))
            if not started:
                body = b'{"detail":"internal error"}'
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            status = 500
        endpoint = getattr(scope.get("route"), "path", "unmatched")
        self.latency.labels(endpoint).observe(time.perf_counter() - start)
        self.requests.labels(endpoint, str(status)).inc()


def _replay(messages, then=None):
    queue = list(messages)

    async def receive():
        if queue:
            return queue.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}
    return receive
