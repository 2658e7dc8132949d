"""Per-namespace disk quotas on the local backend (issue 14 item 6): loop-mounted ext4 images.

Real mounts, real bubblewrap: the quota is checked from inside the sandbox (ENOSPC, df) and
through the API (507), and the mounts themselves from the host (/proc/self/mountinfo).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from trove_sdk import TroveError as SdkError

from tests.storage.disks import MIB, events, require_loop_mounts, unmount
from tests.support.sdk import client
from tests.support.server import LiveServer, make_data_dir, start_server

QUOTA_MB = 8


@pytest.fixture(scope="module")
def quota_server() -> Iterator[LiveServer]:
    require_loop_mounts()
    with start_server(namespace_disk_mb=QUOTA_MB, exec_file_mb=64, snapshot_daily=False) as live:
        yield live


def _mountpoint(server: LiveServer, namespace: str) -> Path:
    return server.data_dir / "mounts" / server.workspace_id / namespace


def test_a_command_cannot_write_past_its_quota(quota_server: LiveServer, namespace: str) -> None:
    with client(quota_server, namespace) as sdk:
        sdk.write("keep.txt", "original")
        assert os.path.ismount(_mountpoint(quota_server, namespace))
        result = sdk.exec_detailed("dd if=/dev/zero of=workspace/big bs=1M count=32 2>&1; echo rc=$?")
        assert "No space left on device" in result.stdout, result.stdout
        assert "rc=1" in result.stdout
        size = int(sdk.exec("stat -c %s workspace/big"))
        assert size < QUOTA_MB * MIB
        # The API's writes land on the same filesystem: refused whole, the old content stays.
        with pytest.raises(SdkError) as refused:
            sdk.upload("keep.txt", b"n" * MIB)
        assert refused.value.status_code == 507
        assert sdk.read_text("keep.txt") == "original"
        assert os.listdir(_mountpoint(quota_server, namespace) / "staging") == []
        # Freeing space inside the namespace makes it writable again.
        sdk.exec("rm workspace/big")
        sdk.upload("keep.txt", b"n" * MIB)
        assert len(events(quota_server, namespace, "file.written")) == 2


def test_namespaces_have_a_quota_each(quota_server: LiveServer) -> None:
    first, second = (f"q-{secrets.token_hex(3)}" for _ in range(2))
    with client(quota_server, first) as one, client(quota_server, second) as two:
        one.exec("dd if=/dev/zero of=workspace/fill bs=1M count=32 2>/dev/null || true")
        two.upload("data.bin", os.urandom(4 * MIB))
        assert two.read_bytes("data.bin") != b""
        size_kb = int(two.exec("df -k --output=size /workspace | tail -1"))
        assert size_kb <= QUOTA_MB * 1024


def test_snapshot_and_restore_inside_a_quota(quota_server: LiveServer, namespace: str) -> None:
    with client(quota_server, namespace) as sdk:
        sdk.write("a.txt", "before")
        snap = sdk.create_snapshot("a")
        sdk.write("a.txt", "after")
        sdk.write("b.txt", "extra")
        assert sdk.restore_snapshot(snap.snapshot_id) == 1
        assert sdk.read_text("a.txt") == "before"
        assert [e.name for e in sdk.list_dir()] == ["a.txt"]
        # Still the mounted image: the restore swapped trees inside it, not the mount itself.
        assert os.path.ismount(_mountpoint(quota_server, namespace))
        assert sdk.exec("cat workspace/a.txt") == "before"


def test_namespaces_from_before_quotas_keep_working() -> None:
    require_loop_mounts()
    data_dir = make_data_dir()
    try:
        with start_server(data_dir=data_dir, snapshot_daily=False) as plain:
            with client(plain, "old") as sdk:
                sdk.write("old.txt", "from before")
            workspace_key, workspace_id = plain.workspace_key, plain.workspace_id
        with start_server(data_dir=data_dir, namespace_disk_mb=QUOTA_MB, snapshot_daily=False) as live:
            live.workspace_key, live.workspace_id = workspace_key, workspace_id
            with client(live, "old") as old, client(live, "new") as new:
                assert old.read_text("old.txt") == "from before"
                old.write("more.txt", "still a directory")
                assert old.exec("cat workspace/old.txt") == "from before"
                new.write("new.txt", "an image")
            assert not os.path.ismount(_mountpoint(live, "old"))
            assert os.path.ismount(_mountpoint(live, "new"))
            assert (data_dir / "namespaces" / workspace_id / "old" / "more.txt").is_file()
        # A clean shutdown unmounts what the server mounted.
        assert not os.path.ismount(data_dir / "mounts" / workspace_id / "new")
    finally:
        _cleanup(data_dir)


def test_mounts_left_by_a_killed_server_are_reused_and_released() -> None:
    require_loop_mounts()
    data_dir = make_data_dir()
    try:
        with start_server(data_dir=data_dir, namespace_disk_mb=QUOTA_MB, snapshot_daily=False) as first:
            with client(first, "kept") as sdk:
                sdk.write("kept.txt", "kept")
            workspace_key, workspace_id = first.workspace_key, first.workspace_id
        # What kill -9 leaves: the image still mounted, an upload's temp file in its staging.
        image = data_dir / "images" / workspace_id / "kept.ext4"
        mountpoint = data_dir / "mounts" / workspace_id / "kept"
        subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
        (mountpoint / "staging" / "upload-leftover").write_bytes(b"half")
        with start_server(data_dir=data_dir, namespace_disk_mb=QUOTA_MB, snapshot_daily=False) as second:
            second.workspace_key, second.workspace_id = workspace_key, workspace_id
            with client(second, "kept") as sdk:
                assert sdk.read_text("kept.txt") == "kept"
                sdk.write("again.txt", "again")
            assert os.listdir(mountpoint / "staging") == []
            assert _mount_count(mountpoint) == 1
        assert not os.path.ismount(mountpoint)
    finally:
        _cleanup(data_dir)


def _mount_count(mountpoint: Path) -> int:
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        return sum(1 for line in mountinfo if line.split()[4] == str(mountpoint))


def _cleanup(data_dir: Path) -> None:
    mounts = data_dir / "mounts"
    if mounts.is_dir():
        for workspace in filter(Path.is_dir, mounts.iterdir()):
            for mountpoint in workspace.iterdir():
                unmount(mountpoint)
    subprocess.run(["rm", "-rf", "--one-file-system", str(data_dir)], check=False)


def test_a_second_server_stopping_leaves_the_first_ones_mounts() -> None:
    """Replicas (or `trove-server snapshots`) share a data dir: only the last to stop unmounts."""
    require_loop_mounts()
    data_dir = make_data_dir()
    try:
        with start_server(data_dir=data_dir, namespace_disk_mb=QUOTA_MB, snapshot_daily=False) as first:
            mountpoint = _mountpoint(first, "shared")
            with client(first, "shared") as sdk:
                sdk.write("a.txt", "a")
            with start_server(data_dir=data_dir, namespace_disk_mb=QUOTA_MB, snapshot_daily=False) as second:
                second.workspace_key, second.workspace_id = first.workspace_key, first.workspace_id
                with client(second, "shared") as sdk:
                    assert sdk.read_text("a.txt") == "a"
            assert os.path.ismount(mountpoint)
            with client(first, "shared") as sdk:
                sdk.write("b.txt", "b")
                assert sdk.exec("cat workspace/a.txt workspace/b.txt") == "ab"
        assert not os.path.ismount(mountpoint)
    finally:
        _cleanup(data_dir)


def test_images_and_mounts_are_private(quota_server: LiveServer, namespace: str) -> None:
    with client(quota_server, namespace) as sdk:
        sdk.exec("touch workspace/mine")
    mountpoint = _mountpoint(quota_server, namespace)
    root = mountpoint / "root"
    uid = (root / "mine").stat().st_uid
    assert uid != 0
    assert root.stat().st_uid == uid
    assert root.stat().st_mode & 0o077 == 0  # other namespaces' uids cannot enter
    assert mountpoint.stat().st_mode & 0o777 == 0o711  # traversable, not listable
    assert (mountpoint / "staging").stat().st_uid == 0
    assert (mountpoint / "staging").stat().st_mode & 0o077 == 0
    image = quota_server.data_dir / "images" / quota_server.workspace_id / f"{namespace}.ext4"
    assert image.stat().st_uid == 0
    assert image.stat().st_mode & 0o077 == 0
    assert (quota_server.data_dir / "images").stat().st_mode & 0o077 == 0


def test_an_e2b_kill_unmounts_and_deletes_the_image(
    quota_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from e2b import Sandbox

    monkeypatch.setenv("E2B_API_URL", f"{quota_server.base_url}/e2b")
    monkeypatch.setenv("E2B_SANDBOX_URL", f"{quota_server.base_url}/e2b")
    monkeypatch.setenv("E2B_API_KEY", quota_server.workspace_key)
    sbx = Sandbox.create()
    sbx.files.write("inside.txt", "in the image")
    mountpoint = _mountpoint(quota_server, sbx.sandbox_id)
    image = quota_server.data_dir / "images" / quota_server.workspace_id / f"{sbx.sandbox_id}.ext4"
    assert os.path.ismount(mountpoint)
    assert image.is_file()
    sbx.kill()
    assert not os.path.ismount(mountpoint)
    assert not mountpoint.exists()
    assert not image.exists()
