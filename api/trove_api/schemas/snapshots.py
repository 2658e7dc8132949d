"""Snapshot wire models (WIRE.md E9–E12, §2.1 Snapshot)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from trove_api.schemas.common import Text


class SnapshotCreate(BaseModel):
    label: Text | None = Field(
        None, max_length=128, description="Free-form label shown in listings (at most 128 characters)."
    )


class Snapshot(BaseModel):
    snapshot_id: str = Field(description="`snap-<16 hex>` (manual) or `auto-<16 hex>` (daily).")
    namespace: str
    label: str | None
    size_bytes: int = Field(description="Size of the stored gzip tarball in bytes.")
    created_at: str
    checksum: str = Field(description="`sha256:<hex>` of the stored tarball.")


class SnapshotList(BaseModel):
    snapshots: list[Snapshot] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        None, description="Only with `limit`: pass as `cursor` for the next page; null on the last page."
    )


class SnapshotRestored(BaseModel):
    files_restored: int = Field(description="Regular files in the namespace after the restore.")
    snapshot_id: str
    namespace: str
    restored_at: str


class SnapshotDeleted(BaseModel):
    snapshot_id: str
    deleted: bool = True
