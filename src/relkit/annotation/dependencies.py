"""What the annotation app's routes depend on: the running app's state and the signed-in annotator."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from relkit.annotation.auth import COOKIE, Session
from relkit.annotation.state import Annotation


def running(request: Request) -> Annotation:
    return request.app.state.annotation


def current_session(request: Request) -> Session | None:
    """The session of the request's cookie, None without a valid one."""
    return running(request).signer.session(request.cookies.get(COOKIE))


def require_session(request: Request) -> Session:
    session = current_session(request)
    if session is None:
        raise HTTPException(401, "sign in first")
    return session


Running = Annotated[Annotation, Depends(running)]
SignedIn = Annotated[Session, Depends(require_session)]
