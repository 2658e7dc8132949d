"""Snapshots through the official client and CLI: create, list, restore, delete (WIRE.md E9–E12)."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from trove_sdk.exceptions import TroveError, TroveNotFoundError

from tests.support.sdk import cli_env, client, run_cli
from tests.support.server import LiveServer
from trove_api.stores.tables import events

SEED_SNIPPET = """\
# Take a checkpoint before a risky operation
snap = client.create_snapshot(label="before-migration")
print(snap.snapshot_id, snap.size_bytes)
# List checkpoints — newest first
for s in client.list_snapshots():
    print(s.snapshot_id, s.label, s.created_at)
# Restore — wipes namespace, extracts the tarball back
files_restored = client.restore_snapshot("snap-b1bde15ffe82b60a")
print(f"{files_restored} files restored")
# Delete a snapshot when you no longer need it
client.delete_snapshot("snap-b1bde15ffe82b60a")
"""
SNAP_ID = re.compile(r"^snap-[0-9a-f]{16}$")


def _event_types(server: LiveServer, namespace: str) -> list[str]:
    with server.ctx.db.read() as conn:
        rows = conn.execute(
            select(events.c.type).where(events.c.namespace == namespace).order_by(events.c.seq)
        )
        return [row.type for row in rows]


def test_seed_snippet_runs(server: LiveServer, namespace: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The seed restores and deletes a hardcoded id ("snap-b1bde15ffe82b60a"); ids are random,
    # so that one literal is replaced by the id the snippet itself just created.
    code = SEED_SNIPPET.replace('"snap-b1bde15ffe82b60a"', "snap.snapshot_id")
    with client(server, namespace) as trove:
        trove.write("workspace/notes.md", "keep me")
        exec(compile(code, "seed-001-snapshots", "exec"), {"client": trove})
        assert trove.list_snapshots() == []
    lines = capsys.readouterr().out.splitlines()
    first_id, size = lines[0].split()
    assert SNAP_ID.match(first_id)
    assert int(size) > 0
    assert lines[1].startswith(f"{first_id} before-migration ")
    assert lines[-1] == "1 files restored"


def test_create_list_restore_delete(server: LiveServer, namespace: str) -> None:
    with client(server, namespace) as trove:
        trove.write("workspace/a/b.txt", "first")
        trove.upload("workspace/bin.dat", bytes(range(256)))
        first = trove.create_snapshot(label="one")
        assert SNAP_ID.match(first.snapshot_id)
        assert (first.namespace, first.label) == (namespace, "one")
        assert first.size_bytes > 0
        assert first.created_at.endswith("Z")
        second = trove.create_snapshot()
        assert second.label is None
        assert [s.snapshot_id for s in trove.list_snapshots()] == [second.snapshot_id, first.snapshot_id]

        trove.write("workspace/a/b.txt", "changed")
        trove.write("workspace/new.txt", "new")
        trove.exec("mkdir -p workspace/d && ln -s ../a/b.txt workspace/d/link")
        assert trove.restore_snapshot(first.snapshot_id) == 2
        assert trove.read_text("workspace/a/b.txt") == "first"
        assert trove.read_bytes("workspace/bin.dat") == bytes(range(256))
        with pytest.raises(TroveNotFoundError):
            trove.read_text("workspace/new.txt")
        assert trove.exec("ls workspace") == "a\nbin.dat\n"
        # Restored files belong to the namespace's uid: the sandbox can still write them.
        assert trove.exec("echo more >> workspace/a/b.txt && cat workspace/a/b.txt") == "firstmore\n"

        trove.delete_snapshot(first.snapshot_id)
        assert [s.snapshot_id for s in trove.list_snapshots()] == [second.snapshot_id]
        with pytest.raises(TroveNotFoundError):
            trove.restore_snapshot(first.snapshot_id)
        with pytest.raises(TroveNotFoundError):
            trove.delete_snapshot(first.snapshot_id)
        with pytest.raises(TroveNotFoundError):
            trove.restore_snapshot("snap-0000000000000000")
    assert _event_types(server, namespace).count("snapshot.created") == 2
    assert "snapshot.restored" in _event_types(server, namespace)
    assert "snapshot.deleted" in _event_types(server, namespace)


def test_event_data(server: LiveServer, namespace: str) -> None:
    with client(server, namespace) as trove:
        trove.write("workspace/x", "x")
        snap = trove.create_snapshot(label="ev")
        trove.restore_snapshot(snap.snapshot_id)
        trove.delete_snapshot(snap.snapshot_id)
    with server.ctx.db.read() as conn:
        rows = conn.execute(
            select(events.c.type, events.c.data)
            .where(events.c.namespace == namespace, events.c.type.startswith("snapshot."))
            .order_by(events.c.seq)
        ).all()
    import json

    data = {row.type: json.loads(row.data) for row in rows}
    assert data["snapshot.created"] == {
        "snapshot_id": snap.snapshot_id,
        "label": "ev",
        "size_bytes": snap.size_bytes,
    }
    assert data["snapshot.restored"] == {"snapshot_id": snap.snapshot_id, "files_restored": 1}
    assert data["snapshot.deleted"] == {"snapshot_id": snap.snapshot_id}


def test_label_too_long_is_422(server: LiveServer, namespace: str) -> None:
    with client(server, namespace) as trove:
        trove.create_snapshot(label="x" * 128)
        with pytest.raises(TroveError) as caught:
            trove.create_snapshot(label="x" * 129)
    assert caught.value.status_code == 422
    assert isinstance(str(caught.value), str)
    assert "128" in str(caught.value)


def test_other_namespace_snapshot_is_404(server: LiveServer, namespace: str) -> None:
    with client(server, namespace) as owner, client(server, namespace + "-other") as other:
        owner.write("workspace/f", "mine")
        snap = owner.create_snapshot()
        with pytest.raises(TroveNotFoundError):
            other.restore_snapshot(snap.snapshot_id)
        with pytest.raises(TroveNotFoundError):
            other.delete_snapshot(snap.snapshot_id)
        assert other.list_snapshots() == []
        assert owner.read_text("workspace/f") == "mine"


def test_empty_namespace_round_trip(server: LiveServer, namespace: str) -> None:
    with client(server, namespace) as trove:
        snap = trove.create_snapshot()
        trove.write("workspace/later.txt", "later")
        assert trove.restore_snapshot(snap.snapshot_id) == 0
        assert trove.list_dir() == []


def test_pagination_and_download(server: LiveServer, namespace: str) -> None:
    headers = {"Authorization": f"Bearer {server.workspace_key}", "X-Namespace": namespace}
    with client(server, namespace) as trove:
        trove.write("workspace/doc.txt", "hello")
        made = [trove.create_snapshot(label=str(i)).snapshot_id for i in range(3)]
    with httpx.Client(base_url=server.base_url, headers=headers) as http:
        page = http.get("/v1/snapshots", params={"limit": 2}).json()
        assert [s["snapshot_id"] for s in page["snapshots"]] == made[::-1][:2]
        rest = http.get("/v1/snapshots", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        assert [s["snapshot_id"] for s in rest["snapshots"]] == [made[0]]
        assert rest["next_cursor"] is None
        assert http.get("/v1/snapshots").json()["next_cursor"] is None
        bad = http.get("/v1/snapshots", params={"cursor": "!!"})
        assert bad.status_code == 422
        assert isinstance(bad.json()["detail"], str)

        download = http.get(f"/v1/snapshots/{made[0]}/download")
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/gzip"
        assert (
            download.headers["x-trove-checksum"] == "sha256:" + hashlib.sha256(download.content).hexdigest()
        )
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(download.content))) as tar:
            assert tar.getnames() == ["doc.txt"]
            member = tar.extractfile("doc.txt")
            assert member is not None
            assert member.read() == b"hello"
        assert http.get("/v1/snapshots/snap-0000000000000000/download").status_code == 404
        other = {**headers, "X-Namespace": namespace + "-x"}
        assert http.get(f"/v1/snapshots/{made[0]}/download", headers=other).status_code == 404


def test_cli_snapshot_commands(server: LiveServer, namespace: str, tmp_path: Path) -> None:
    env = cli_env(server, tmp_path, namespace=namespace)
    with client(server, namespace) as trove:
        trove.write("workspace/cli.txt", "v1")
    created = run_cli(["snapshot", "create", "--label", "x"], env)
    assert created.returncode == 0, created.stderr
    snap_id = re.search(r"snap-[0-9a-f]{16}", created.stdout)
    assert snap_id is not None
    listed = run_cli(["snapshot", "list"], env)
    assert listed.returncode == 0
    assert snap_id.group() in listed.stdout
    assert " x" in listed.stdout
    with client(server, namespace) as trove:
        trove.write("workspace/cli.txt", "v2")
    restored = run_cli(["snapshot", "restore", snap_id.group(), "-y"], env)
    assert restored.returncode == 0, restored.stderr
    assert "files_restored=1" in restored.stdout
    with client(server, namespace) as trove:
        assert trove.read_text("workspace/cli.txt") == "v1"
    deleted = run_cli(["snapshot", "delete", snap_id.group(), "-y"], env)
    assert deleted.returncode == 0
    assert f"deleted {snap_id.group()}" in deleted.stdout
    for verb in ("restore", "delete"):
        missing = run_cli(["snapshot", verb, snap_id.group(), "-y"], env)
        assert missing.returncode == 1
        assert f"snapshot not found: {snap_id.group()}" in missing.stderr
    assert "no snapshots" in run_cli(["snapshot", "list"], env).stdout
