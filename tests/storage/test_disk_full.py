"""A full data disk (issue 14 item 14): 507 storage_full, nothing half-written, the database still commits.

The data dir is a real, small ext4 (loop-mounted by the test, no root-reserved blocks), so the
disk really fills: no mocks. Each case checks what the client was told, what is on disk
afterwards, that every acknowledged change has its event, and that the server keeps serving.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from trove_sdk import TroveError as SdkError

from tests.hostile.helpers import temp_files
from tests.storage.disks import (
    MIB,
    assert_storage_full,
    events,
    free_bytes,
    put_file,
    small_filesystem,
)
from tests.support.sdk import client
from tests.support.server import LiveServer, start_server

DISK_MB = 96
RESERVE_MB = 8
BLOB = 4 * MIB


@pytest.fixture
def full_disk_server() -> Iterator[LiveServer]:
    with small_filesystem(DISK_MB) as disk:
        data_dir = disk / "data"
        data_dir.mkdir(mode=0o711)
        with start_server(data_dir=data_dir, data_reserve_mb=RESERVE_MB, snapshot_daily=False) as live:
            yield live


def _fill(server: LiveServer, namespace: str) -> list[str]:
    """Upload incompressible blobs (4 MiB, then smaller) until refused; the names acknowledged."""
    stored = []
    for size in (BLOB, 256 * 1024, 16 * 1024):
        for number in range(DISK_MB * MIB // size + 2):
            name = f"blob-{size}-{number}.bin"
            answer = put_file(server, namespace, name, os.urandom(size))
            if answer.status_code == 507:
                assert_storage_full(answer)
                break
            assert answer.status_code == 200, answer.text
            stored.append(name)
        else:
            raise AssertionError("the disk never filled")
    # What the refusals left: the reserve, room for the database's commits.
    assert free_bytes(server.data_dir) >= RESERVE_MB * MIB - MIB
    return stored


def _staging_is_empty(server: LiveServer) -> None:
    leftovers = temp_files(server)
    assert leftovers == [], leftovers
    temps = [p.name for p in (server.data_dir / "snapshots" / ".tmp").iterdir()]
    assert temps == [], temps


def test_writes_stop_at_the_reserve_and_the_database_keeps_committing(full_disk_server: LiveServer) -> None:
    server = full_disk_server
    keep, fill, other = (f"{kind}-{secrets.token_hex(3)}" for kind in ("keep", "fill", "other"))
    with client(server, keep) as sdk, client(server, other) as other_sdk:
        sdk.write("keep.txt", "original")
        other_sdk.write("other.txt", "still here")
        stored = _fill(server, fill)

        # Every acknowledged upload is whole and has its event; the refused one left nothing.
        with client(server, fill) as fill_sdk:
            listed = {e.name: e.size_bytes for e in fill_sdk.list_dir()}
        assert listed == {name: int(name.split("-")[1]) for name in stored}
        assert len(events(server, fill, "file.written")) == len(stored)

        # Below the reserve: a replacing write and a small upload are refused, the old content stays.
        with pytest.raises(SdkError) as refused:
            sdk.write("keep.txt", "replaced" * 8000)
        assert refused.value.status_code == 507
        assert_storage_full(put_file(server, keep, "small.bin", b"x" * 64 * 1024))
        assert sdk.read_text("keep.txt") == "original"
        assert len(events(server, keep, "file.written")) == 1
        _staging_is_empty(server)

        # Reads keep working, in every namespace.
        assert other_sdk.read_text("other.txt") == "still here"

        # Deleting frees space; then writes (and their events) work again.
        with client(server, fill) as fill_sdk:
            for name in stored[:3]:
                fill_sdk.delete(name)
        sdk.write("keep.txt", "replaced")
        assert sdk.read_text("keep.txt") == "replaced"
        assert len(events(server, keep, "file.written")) == 2


def test_snapshot_create_and_restore_on_a_full_disk(full_disk_server: LiveServer) -> None:
    server = full_disk_server
    big, fill = (f"{kind}-{secrets.token_hex(3)}" for kind in ("big", "fill"))
    with client(server, big) as sdk:
        for number in range(4):
            sdk.upload(f"data-{number}.bin", os.urandom(4 * MIB))
        first = sdk.create_snapshot("before")
        sdk.write("marker.txt", "written after the snapshot")
        stored = _fill(server, fill)

        # Restore needs 16 MiB in staging: with ~2 blobs freed it runs out half-way (507).
        with client(server, fill) as fill_sdk:
            for name in stored[:2]:
                fill_sdk.delete(name)
        with pytest.raises(SdkError) as refused:
            sdk.restore_snapshot(first.snapshot_id)
        assert refused.value.status_code == 507
        assert sdk.read_text("marker.txt") == "written after the snapshot"
        assert len(events(server, big, "snapshot.restored")) == 0
        _staging_is_empty(server)

        # Create streams 16 MiB into the snapshot directory: refused half-way, nothing listed.
        with pytest.raises(SdkError) as refused:
            sdk.create_snapshot("too big")
        assert refused.value.status_code == 507
        assert [s.snapshot_id for s in sdk.list_snapshots()] == [first.snapshot_id]
        assert len(events(server, big, "snapshot.created")) == 1
        _staging_is_empty(server)

        # With room again, the same restore goes through and is recorded.
        with client(server, fill) as fill_sdk:
            for name in stored[2:6]:
                fill_sdk.delete(name)
        assert sdk.restore_snapshot(first.snapshot_id) == 4
        assert "marker.txt" not in {e.name for e in sdk.list_dir()}
        assert len(events(server, big, "snapshot.restored")) == 1


@pytest.fixture
def quota_disk_server() -> Iterator[LiveServer]:
    with small_filesystem(DISK_MB) as disk:
        data_dir = disk / "data"
        data_dir.mkdir(mode=0o711)
        with start_server(
            data_dir=data_dir,
            data_reserve_mb=RESERVE_MB,
            namespace_disk_mb=16,
            exec_file_mb=200,
            exec_timeout_s=60,
            snapshot_daily=False,
        ) as live:
            yield live


def test_exec_that_fills_its_disk_sees_enospc_and_the_call_answers(quota_disk_server: LiveServer) -> None:
    server = quota_disk_server
    greedy, other = (f"{kind}-{secrets.token_hex(3)}" for kind in ("greedy", "other"))
    with client(server, greedy) as sdk, client(server, other) as other_sdk:
        sdk.write("keep.txt", "original")
        # 200 MiB into a 96 MiB data disk: the namespace's quota stops it, the disk keeps room.
        result = sdk.exec_detailed("dd if=/dev/zero of=workspace/big bs=1M count=200 2>&1; echo rc=$?")
        assert "No space left on device" in result.stdout, result.stdout
        assert result.exit_code == 0
        assert "rc=1" in result.stdout
        assert free_bytes(server.data_dir) > RESERVE_MB * MIB
        assert len(events(server, greedy, "exec.completed")) == 1

        # The namespace is full: a replacing write is refused whole, the old content stays.
        with pytest.raises(SdkError) as refused:
            sdk.upload("keep.txt", b"y" * MIB)
        assert refused.value.status_code == 507
        assert sdk.read_text("keep.txt") == "original"
        assert len(events(server, greedy, "file.written")) == 1

        # Other namespaces write, run and read as before.
        other_sdk.write("other.txt", "fine")
        assert other_sdk.exec("cat workspace/other.txt") == "fine"
        sdk.delete("workspace/big")
        sdk.write("keep.txt", "replaced")
        assert sdk.read_text("keep.txt") == "replaced"


def test_database_full_is_507_not_500() -> None:
    """No reserve, and the disk filled behind the server's back: the database itself cannot grow."""
    with small_filesystem(48) as disk:
        data_dir = disk / "data"
        data_dir.mkdir(mode=0o711)
        with start_server(data_dir=data_dir, data_reserve_mb=0, snapshot_daily=False) as server:
            existing, new = (f"{kind}-{secrets.token_hex(3)}" for kind in ("existing", "new"))
            with client(server, existing) as sdk, client(server, new) as new_sdk:
                sdk.write("a.txt", "a")
                ballast = disk / "ballast"
                _fill_behind_the_back(ballast)
                try:
                    # A new namespace's row cannot be inserted: "database or disk is full".
                    with pytest.raises(SdkError) as refused:
                        new_sdk.exec("true")
                    assert refused.value.status_code == 507
                    with pytest.raises(SdkError) as refused:
                        sdk.write("b.txt", "b" * 100_000)
                    assert refused.value.status_code == 507
                    assert sdk.read_text("a.txt") == "a"
                    assert [e.name for e in sdk.list_dir()] == ["a.txt"]
                finally:
                    ballast.unlink()
                new_sdk.write("b.txt", "b")
                assert new_sdk.read_text("b.txt") == "b"


def _fill_behind_the_back(ballast: Path) -> None:
    with open(ballast, "wb", buffering=0) as handle:
        for size in (MIB, 4096, 512):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError:
                continue


def test_a_namespace_that_does_not_fit_is_refused() -> None:
    """Preallocated images: a new namespace needs its whole quota on the disk, beside the reserve."""
    with small_filesystem(DISK_MB) as disk:
        data_dir = disk / "data"
        data_dir.mkdir(mode=0o711)
        with start_server(
            data_dir=data_dir, data_reserve_mb=RESERVE_MB, namespace_disk_mb=48, snapshot_daily=False
        ) as server:
            first, second = (f"{kind}-{secrets.token_hex(3)}" for kind in ("first", "second"))
            with client(server, first) as sdk, client(server, second) as too_many:
                sdk.write("a.txt", "a")
                image = server.data_dir / "images" / server.workspace_id / f"{first}.ext4"
                assert image.stat().st_blocks * 512 >= 48 * MIB  # allocated, not sparse
                with pytest.raises(SdkError) as refused:
                    too_many.write("b.txt", "b")
                assert refused.value.status_code == 507
                assert not (image.parent / f"{second}.ext4").exists()
                assert [p.name for p in image.parent.iterdir()] == [image.name]
                sdk.write("a.txt", "still writable")
                assert sdk.read_text("a.txt") == "still writable"
