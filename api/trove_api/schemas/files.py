"""File wire models (WIRE.md E3–E8)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from trove_api.schemas.common import Text


class WriteRequest(BaseModel):
    path: str = Field(description="Namespace-relative path, with or without workspace/.")
    content: Text = Field(description="UTF-8 text (at most 10 MiB encoded).")


class FileResult(BaseModel):
    path: str = Field(description="Display form, workspace/<path>.")
    size_bytes: int


class DeleteRequest(BaseModel):
    path: str


class DeleteResult(BaseModel):
    deleted: str = Field(description="Display form of the removed path.")


class FileInfo(BaseModel):
    name: str
    path: str
    is_dir: bool
    size_bytes: int | None = Field(description="null for directories.")
    modified_at: str


class ListResult(BaseModel):
    entries: list[FileInfo]
    truncated: bool = False


class FileContent(BaseModel):
    path: str
    size_bytes: int = Field(description="Full size, even when the preview is truncated.")
    modified_at: str
    encoding: Literal["utf-8", "binary"]
    content: str | None = Field(description="null when binary.")
    truncated: bool = Field(description="True when the file is larger than the 1 MiB preview.")
