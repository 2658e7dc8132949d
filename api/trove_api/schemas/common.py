"""Shapes shared by every router: the problem body."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Problem(BaseModel):
    """An RFC 9457 problem; ``detail`` is always a string (the official client prints it)."""

    type: str = Field(description="URI naming the problem kind.")
    title: str
    status: int
    detail: str = Field(description="Human-readable explanation; shown by the official client.")
    code: str = Field(description="Stable snake_case error code.")
    request_id: str = Field(description="Same value as the X-Request-Id response header.")


def problems(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` entries for the error statuses a route can answer."""
    return {status: {"model": Problem, "content": {"application/problem+json": {}}} for status in statuses}
