"""Event wire models (WIRE.md 2.1 Event, E23, E24)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Actor(BaseModel):
    key_id: str | None
    key_name: str | None


class Event(BaseModel):
    id: str = Field(description="`evt-…`; also the SSE `id:` (resume with `Last-Event-ID`).")
    type: str
    api_version: str
    workspace_id: str
    namespace: str | None
    created_at: str = Field(description="Fixed-width `…Z` with microseconds; unique per workspace.")
    actor: Actor
    data: dict[str, Any]


class EventPage(BaseModel):
    events: list[Event] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null when none.")
