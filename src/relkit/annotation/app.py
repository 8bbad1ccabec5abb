"""`relkit annotate`: people judge (query, item) pairs in a browser, one at a time, by keyboard.

The pages are rendered on the server (Jinja2, autoescaped); a small script swaps in the next pair,
which is already in the page, the moment a key is pressed, and saves the judgment behind it.
Every action goes to the journal (store.py) before it is answered; the journal is merged into the
workspace every few seconds when the workspace is free, so the app runs alongside `relkit teach`,
`label` or `eval`.

The app is a factory over routers (routers/: sessions, pages, api), their dependencies
(dependencies.py: the running state, the signed-in annotator), the state the app holds while it
runs (state.py) and one middleware (middleware.py: same-origin writes, security headers).

    app = create_app("my-ws", AppConfig(overlap=0.2))
"""
from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from relkit.annotation.middleware import Guard
from relkit.annotation.routers import api, pages, sessions
from relkit.annotation.state import AppConfig, Annotation, Prepared, prepare
from relkit.annotation.views import HERE

__all__ = ["AppConfig", "Prepared", "create_app", "prepare", "serve"]


def create_app(workspace: str | os.PathLike, config: AppConfig | None = None,
               prepared: Prepared | None = None) -> FastAPI:
    """The annotation app of a workspace (served by `relkit annotate`); `prepared` is what
    `prepare` read, else the app reads it when it starts."""
    annotation = Annotation(Path(workspace), config or AppConfig(), prepared)
    app = FastAPI(title="relkit annotate", lifespan=annotation.lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(Guard)
    for routes in (sessions.router, pages.router, api.router):
        app.include_router(routes)
    app.state.annotation = annotation
    return app


def serve(workspace: str | os.PathLike, config: AppConfig, host: str = "127.0.0.1", port: int = 8001,
          prepared: Prepared | None = None) -> None:
    """Run the app until interrupted."""
    import uvicorn

    prepared = prepared or prepare(Path(workspace), config)
    uvicorn.run(create_app(workspace, config, prepared), host=host, port=port, log_level="warning",
                access_log=False)
