"""Shapes shared by every router: the problem body, and the validated text type."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

# pydantic's own error type for text with no UTF-8 form; it raises it itself for strings with
# length constraints, and ``Text`` raises it for the rest, so problems.py maps one type to 400.
UNICODE_ERROR_TYPE = "string_unicode"
UNICODE_MESSAGE = (
    "not valid Unicode text (it holds a lone surrogate such as \\ud800, which has no UTF-8 form)"
)


def _utf8_encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError(UNICODE_ERROR_TYPE, UNICODE_MESSAGE) from None
    return value


# Every free-text request field: JSON can spell a lone surrogate ("\ud800"), which decodes to a
# str no process, file or database can take. Paths stay plain str: paths.normalize refuses
# them with its own code (path_rejected).
Text = Annotated[str, AfterValidator(_utf8_encodable)]


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
