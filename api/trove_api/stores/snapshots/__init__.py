"""Snapshot stores; ``make_snapshot_store`` picks one from the settings."""

from __future__ import annotations

from trove_api.stores.snapshots.base import SnapshotReader, SnapshotStore
from trove_core.diskspace import MIB, DiskReserve
from trove_core.settings import Settings

__all__ = ["SnapshotReader", "SnapshotStore", "make_snapshot_store"]


def make_snapshot_store(settings: Settings) -> SnapshotStore:
    if settings.snapshot_store == "s3":
        from trove_api.stores.snapshots.s3 import S3SnapshotStore

        return S3SnapshotStore.from_settings(settings)
    from trove_api.stores.snapshots.directory import DirectorySnapshotStore

    reserve = DiskReserve(settings.data_dir, settings.data_reserve_mb * MIB)
    return DirectorySnapshotStore(settings.snapshot_dir or settings.data_dir / "snapshots", reserve)
