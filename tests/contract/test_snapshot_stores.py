"""Snapshot stores: the directory store and the S3 store against a real SeaweedFS on loopback."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.s3 import S3Server
from tests.support.sdk import client
from tests.support.server import LiveServer, start_server
from trove_api.stores.snapshots import SnapshotStore
from trove_api.stores.snapshots.directory import DirectorySnapshotStore
from trove_api.stores.snapshots.s3 import S3SnapshotStore
from trove_core.errors import SnapshotNotFoundError, SnapshotStoreUnavailableError

MIB = 1024 * 1024


def _s3_store(s3: S3Server, bucket: str | None = None, **overrides: object) -> S3SnapshotStore:
    options: dict[str, object] = {
        "bucket": bucket or f"trove-{secrets.token_hex(4)}",
        "endpoint_url": s3.endpoint_url,
        "access_key_id": s3.access_key_id,
        "secret_access_key": s3.secret_access_key,
        "region": s3.region,
        "prefix": "snapshots/",
        "part_size": 5 * MIB,
    }
    options.update(overrides)
    return S3SnapshotStore(**options)  # type: ignore[arg-type]


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SnapshotStore]:
    if request.param == "directory":
        yield DirectorySnapshotStore(tmp_path / "snapshots")
    else:
        yield _s3_store(request.getfixturevalue("s3"))


async def _chunks(data: bytes, size: int = 700_000, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        if fail_after is not None and offset >= fail_after:
            raise RuntimeError("producer died")
        yield data[offset : offset + size]


async def _read_all(store: SnapshotStore, key: str) -> bytes:
    reader = await store.open(key)
    try:
        return b"".join([chunk async for chunk in reader.chunks()])
    finally:
        await reader.aclose()


@pytest.mark.parametrize("size", [0, 1000, 12 * MIB + 17])
async def test_round_trip(store: SnapshotStore, size: int) -> None:
    data = os.urandom(size)
    key = f"ws-x/ns/{secrets.token_hex(4)}.tar.gz"
    assert await store.put(key, _chunks(data)) == size
    reader = await store.open(key)
    assert reader.size == size
    await reader.aclose()
    assert hashlib.sha256(await _read_all(store, key)).digest() == hashlib.sha256(data).digest()
    await store.delete(key)
    with pytest.raises(SnapshotNotFoundError):
        await store.open(key)
    await store.delete(key)  # a missing key is fine


async def test_failed_upload_leaves_nothing(store: SnapshotStore) -> None:
    key = f"ws-x/ns/{secrets.token_hex(4)}.tar.gz"
    with pytest.raises(RuntimeError, match="producer died"):
        await store.put(key, _chunks(os.urandom(12 * MIB), fail_after=7 * MIB))
    with pytest.raises(SnapshotNotFoundError):
        await store.open(key)
    if isinstance(store, S3SnapshotStore):
        uploads = store.client.list_multipart_uploads(Bucket=store.bucket)
        assert uploads.get("Uploads", []) == []
    else:
        assert isinstance(store, DirectorySnapshotStore)
        assert list(store.temp.iterdir()) == []


async def test_a_second_process_on_the_directory_spares_uploads_in_flight(tmp_path: Path) -> None:
    # Two replicas (or a replica and a `trove-server snapshots` command) share the directory:
    # one starting up must not delete the other's temp file mid-upload, only a crash's leftovers.
    root = tmp_path / "snapshots"
    first = DirectorySnapshotStore(root)
    stale = first.temp / "crashed.part"
    stale.write_bytes(b"left by a crash")
    os.utime(stale, (time.time() - 2 * 3600,) * 2)
    data = os.urandom(3 * MIB)
    key = f"ws-x/ns/{secrets.token_hex(4)}.tar.gz"

    async def chunks_with_a_second_store() -> AsyncIterator[bytes]:
        yield data[:MIB]
        DirectorySnapshotStore(root)  # starts while the upload's temp file is open
        yield data[MIB:]

    assert await first.put(key, chunks_with_a_second_store()) == len(data)
    assert await _read_all(first, key) == data
    assert not stale.exists()


async def test_s3_wrong_secret_fails(s3: S3Server) -> None:
    bucket = f"trove-{secrets.token_hex(4)}"
    await _s3_store(s3, bucket).check()  # the bucket exists, so only the secret differs
    wrong = _s3_store(s3, bucket, secret_access_key="not-the-secret")
    with pytest.raises(SnapshotStoreUnavailableError, match=r"SignatureDoesNotMatch|AccessDenied|403"):
        await wrong.check()
    with pytest.raises(SnapshotStoreUnavailableError):
        await wrong.put("k.tar.gz", _chunks(b"data"))


async def test_s3_bucket_created_only_when_allowed(s3: S3Server) -> None:
    with pytest.raises(SnapshotStoreUnavailableError):
        await _s3_store(s3, create_bucket=False).check()
    store = _s3_store(s3)
    await store.put("a.tar.gz", _chunks(b"abc"))
    assert await _read_all(store, "a.tar.gz") == b"abc"
    listed = store.client.list_objects_v2(Bucket=store.bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["snapshots/a.tar.gz"]


async def test_s3_dead_endpoint_is_unavailable() -> None:
    dead = S3SnapshotStore(
        bucket="nowhere",
        endpoint_url="http://127.0.0.1:9",
        access_key_id="x",
        secret_access_key="y",
        region="us-east-1",
    )
    with pytest.raises(SnapshotStoreUnavailableError, match="S3 snapshot store failed"):
        await dead.put("k.tar.gz", _chunks(b"data"))


@pytest.fixture(scope="module")
def s3_server(s3: S3Server) -> Iterator[LiveServer]:
    with start_server(snapshot_daily=False, **s3.settings(f"trove-{secrets.token_hex(4)}")) as live:
        yield live


def test_server_with_s3_store(s3_server: LiveServer, s3: S3Server, namespace: str) -> None:
    with client(s3_server, namespace) as trove:
        trove.write("workspace/a.txt", "one")
        trove.upload("workspace/big.bin", os.urandom(11 * MIB))  # more than one 8 MiB part
        snap = trove.create_snapshot(label="s3")
        trove.write("workspace/a.txt", "two")
        assert trove.restore_snapshot(snap.snapshot_id) == 2
        assert trove.read_text("workspace/a.txt") == "one"
        bucket = s3_server.settings.s3_bucket
        key = f"snapshots/{s3_server.workspace_id}/{namespace}/{snap.snapshot_id}.tar.gz"
        head = s3.client().head_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
        assert head["ContentLength"] == snap.size_bytes
        trove.delete_snapshot(snap.snapshot_id)
        listed = s3.client().list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
        assert [o["Key"] for o in listed.get("Contents", [])] == []
