"""The bodies the annotation app's API takes."""
from __future__ import annotations

from pydantic import BaseModel, Field


class Judgment(BaseModel):
    """A judgment (`label` set) or a skip of one pair; `event_id` is the client's id for the action,
    so a retried request is the same action."""

    event_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    query_id: str = Field(max_length=1000)
    item_id: str = Field(max_length=1000)
    label: int | None = None
    note: str | None = Field(default=None, max_length=2000)
    seconds: float | None = Field(default=None, ge=0, le=86400)


class Undo(BaseModel):
    event_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
