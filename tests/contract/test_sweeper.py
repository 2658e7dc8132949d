"""The periodic sweep: a killed snapshot create's leftovers go without a restart; uploads in flight stay."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

from tests.contract.test_snapshot_stores import _read_all, _s3_store
from tests.support.s3 import S3Server
from tests.support.server import start_server
from trove_api.stores.snapshots.directory import DirectorySnapshotStore

MIB = 1024 * 1024


async def _held(first: bytes, release: asyncio.Event, rest: bytes = b"") -> AsyncIterator[bytes]:
    """An upload that sends ``first``, then waits (a slow client) until ``release``."""
    yield first
    await release.wait()
    if rest:
        yield rest


async def _until(condition: object, what: str, timeout_s: float = 30.0) -> None:
    """Poll a condition (the sweep runs on its own schedule); no timing is asserted."""
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def _age(path: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


async def test_a_running_server_sweeps_a_killed_creates_temp_but_not_an_upload_in_flight() -> None:
    with start_server(sweep_interval_s=0.2, stale_temp_s=600) as server:
        temp = server.data_dir / "snapshots" / ".tmp"
        # What a snapshot create killed half an hour ago left (older than 600 s, younger
        # than the hour after which only a start-up used to sweep it).
        dead = temp / "0123456789abcdef.part"
        dead.write_bytes(b"half a tarball")
        _age(dead, 1800)
        # Another process (a second replica, `trove-server snapshots`) uploading right now.
        other = DirectorySnapshotStore(server.data_dir / "snapshots")
        release = asyncio.Event()
        key = f"{server.workspace_id}/ns/snap-{secrets.token_hex(8)}.tar.gz"
        upload = asyncio.create_task(other.put(key, _held(b"first part", release, b" and the rest")))
        await _until(lambda: any(p != dead for p in temp.iterdir()), "the upload in flight made no temp file")
        (fresh,) = [p for p in temp.iterdir() if p != dead]
        await _until(lambda: not dead.exists(), "the stale temp file outlived the sweep")
        assert fresh.exists()
        release.set()
        assert await upload == len(b"first part and the rest")
        assert await _read_all(other, key) == b"first part and the rest"
        assert list(temp.iterdir()) == []


async def test_a_process_never_sweeps_its_own_upload_however_old(tmp_path: Path) -> None:
    store = DirectorySnapshotStore(tmp_path / "snapshots")
    release = asyncio.Event()
    upload = asyncio.create_task(store.put("ws/ns/snap-1.tar.gz", _held(b"data", release)))
    temp = tmp_path / "snapshots" / ".tmp"
    await _until(lambda: any(temp.iterdir()), "no temp file")
    (part,) = temp.iterdir()
    _age(part, 7200)  # a client stalled for two hours is still this process's upload
    assert await store.sweep(60) == 0
    assert part.exists()
    release.set()
    assert await upload == 4


async def test_stale_multipart_uploads_are_aborted_but_not_one_in_flight(s3: S3Server) -> None:
    store = _s3_store(s3)
    await store.check()
    client = s3.client()
    dead = client.create_multipart_upload(Bucket=store.bucket, Key="snapshots/ws/ns/snap-dead.tar.gz")  # type: ignore[attr-defined]
    release = asyncio.Event()
    data = os.urandom(5 * MIB + 1000)
    upload = asyncio.create_task(
        store.put("ws/ns/snap-live.tar.gz", _held(data[: 5 * MIB], release, data[5 * MIB :]))
    )

    def uploads() -> list[str]:
        listed = client.list_multipart_uploads(Bucket=store.bucket, Prefix="snapshots/")  # type: ignore[attr-defined]
        return sorted(u["UploadId"] for u in listed.get("Uploads", []))

    await _until(lambda: len(uploads()) == 2, "the upload in flight never started its multipart upload")
    await asyncio.sleep(2.1)  # both are now older than the 1 s threshold below
    assert await store.sweep(1.0) == 1
    remaining = uploads()
    assert dead["UploadId"] not in remaining
    assert len(remaining) == 1
    release.set()
    assert await upload == len(data)
    assert await _read_all(store, "ws/ns/snap-live.tar.gz") == data
    await store.aclose()


def test_not_ready_until_the_first_sweep_has_resolved_what_a_crash_left() -> None:
    # After a kill -9, a change on disk whose event is still pending must not be served as
    # settled: /readyz waits for the first sweep (make chaos showed a restore swapped in with
    # its snapshot.restored still pending when the restarted server already answered ready).
    import httpx

    with start_server() as live:
        readyz = f"{live.base_url}/readyz"
        assert httpx.get(readyz, timeout=10).status_code == 200
        live.ctx.sweeper.first_pass_done.clear()  # the state of a server whose first sweep still runs
        try:
            answer = httpx.get(readyz, timeout=10)
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.json()["code"] == "unavailable"
            assert answer.headers["retry-after"] == "1"
        finally:
            live.ctx.sweeper.first_pass_done.set()
        assert httpx.get(readyz, timeout=10).status_code == 200
