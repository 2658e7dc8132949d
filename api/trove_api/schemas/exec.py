"""Exec wire models (WIRE.md E1, E2)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from trove_api.schemas.common import Text
from trove_core.wire import STDIN_MAX_BYTES


class ExecRequest(BaseModel):
    command: Text = Field(description="Run by bash in a fresh shell; cwd contains workspace/.")
    stdin: Text | None = Field(
        None, description=f"UTF-8 text piped to the command (at most {STDIN_MAX_BYTES} bytes)."
    )

    @field_validator("command")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        # bash takes its script as an argument, and no argument can hold a NUL byte.
        if "\x00" in value:
            raise ValueError("the command holds a NUL byte (\\u0000), which no shell command can contain")
        return value

    @field_validator("stdin")
    @classmethod
    def _stdin_cap(cls, value: str | None) -> str | None:
        if value is not None:
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > STDIN_MAX_BYTES:
                raise ValueError(f"stdin is {size} bytes; the limit is {STDIN_MAX_BYTES} bytes")
        return value


class ExecResult(BaseModel):
    exit_code: int
    stdout: str
    stderr: str
    duration_ms: int
    truncated: bool = Field(False, description="True when an output stream hit the cap.")
