"""Restore safety: hostile tarballs in the store, a store that dies mid-restore, a full disk.

Each case plants a crafted tarball in the store under a real snapshot's key (updating the
row's size and checksum, so the member checks themselves are what refuse it), restores it
through the official client, and then checks from both sides that nothing changed: the
namespace's fingerprint (names, types, sizes, modes, owners, contents, root inode) and the
host paths the tarball aimed at.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import signal
import subprocess
import tarfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import update
from trove_sdk import TroveClient
from trove_sdk.exceptions import TroveError

from tests.hostile.helpers import ns_dir
from tests.support.s3 import start_s3
from tests.support.sdk import client
from tests.support.server import LiveServer, make_data_dir, start_server
from trove_api.stores.snapshots.directory import DirectorySnapshotStore
from trove_api.stores.tables import snapshots

FINGERPRINT = (
    "cd workspace && stat -c 'root %i' . && find . -mindepth 1 -printf '%p %y %s %m %U %l\\n' | sort"
    " && find . -type f -exec md5sum {} + | sort"
)


def _fingerprint(trove: TroveClient) -> str:
    return trove.exec(FINGERPRINT)


def _tgz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return compressor.compress(raw.getvalue()) + compressor.flush()


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    return info


def _plant(
    server: LiveServer, namespace: str, snapshot_id: str, data: bytes, *, fix_row: bool = True
) -> None:
    """Replace a snapshot's stored tarball with ``data`` (as a tampered store would)."""
    store = server.ctx.snapshot_store
    assert isinstance(store, DirectorySnapshotStore)
    path = store.root / server.workspace_id / namespace / f"{snapshot_id}.tar.gz"
    assert path.exists()
    path.write_bytes(data)
    if fix_row:
        with server.ctx.db.write() as conn:
            conn.execute(
                update(snapshots)
                .where(snapshots.c.id == snapshot_id)
                .values(size_bytes=len(data), checksum="sha256:" + hashlib.sha256(data).hexdigest())
            )


@pytest.fixture
def victim(server: LiveServer, namespace: str) -> Iterator[tuple[TroveClient, str]]:
    """A namespace with content and a snapshot whose tarball a test may replace."""
    with client(server, namespace) as trove:
        trove.write("workspace/keep/a.txt", "original")
        trove.exec(
            "mkdir -p workspace/d && ln -s ../keep/a.txt workspace/d/link && chmod 600 workspace/keep/a.txt"
        )
        snap = trove.create_snapshot(label="victim")
        trove.write("workspace/after.txt", "written after the snapshot")
        yield trove, snap.snapshot_id


def _outside() -> Path:
    path = Path("/tmp") / f"trove-escape-{secrets.token_hex(6)}"
    path.mkdir(mode=0o755)
    return path


def _refused(trove: TroveClient, snapshot_id: str) -> TroveError:
    before = _fingerprint(trove)
    with pytest.raises(TroveError) as caught:
        trove.restore_snapshot(snapshot_id)
    assert _fingerprint(trove) == before
    assert trove.read_text("workspace/after.txt") == "written after the snapshot"
    return caught.value


CASES: dict[str, Callable[[Path], list[tuple[tarfile.TarInfo, bytes | None]]]] = {
    "absolute path": lambda out: [(_member(str(out / "abs.txt")), b"pwned")],
    "dot-dot": lambda out: [
        (_member("ok.txt"), b"fine"),
        (_member("../../../../../../" + str(out / "up.txt")), b"pwned"),
    ],
    "dot-dot inside": lambda out: [(_member("a/../../x.txt"), b"pwned")],
    "symlink out then file through it": lambda out: [
        (_member("esc", tarfile.SYMTYPE, str(out)), None),
        (_member("esc/through.txt"), b"pwned"),
    ],
    "relative symlink out then file through it": lambda out: [
        (_member("esc", tarfile.SYMTYPE, "../../../../../../../.." + str(out)), None),
        (_member("esc/through.txt"), b"pwned"),
    ],
    "symlink then directory through it": lambda out: [
        (_member("esc", tarfile.SYMTYPE, str(out)), None),
        (_member("esc/sub", tarfile.DIRTYPE, mode=0o755), None),
    ],
    "character device": lambda out: [(_member("null", tarfile.CHRTYPE), None)],
    "block device": lambda out: [(_member("sda", tarfile.BLKTYPE), None)],
    "fifo": lambda out: [(_member("pipe", tarfile.FIFOTYPE), None)],
    "hard link out (absolute)": lambda out: [(_member("pw", tarfile.LNKTYPE, "/etc/passwd"), None)],
    "hard link out (dot-dot)": lambda out: [(_member("pw", tarfile.LNKTYPE, "../../../../etc/passwd"), None)],
    "hard link to a later member": lambda out: [
        (_member("pw", tarfile.LNKTYPE, "later.txt"), None),
        (_member("later.txt"), b"x"),
    ],
    "hard link through a symlink": lambda out: [
        (_member("esc", tarfile.SYMTYPE, "/etc"), None),
        (_member("pw", tarfile.LNKTYPE, "esc/passwd"), None),
    ],
}


@pytest.mark.parametrize("case", list(CASES))
def test_unsafe_member_is_refused(
    server: LiveServer, namespace: str, victim: tuple[TroveClient, str], case: str
) -> None:
    trove, snapshot_id = victim
    out = _outside()
    try:
        _plant(server, namespace, snapshot_id, _tgz(CASES[case](out)))
        error = _refused(trove, snapshot_id)
        assert error.status_code == 422
        assert "refused" in str(error)
        assert list(out.iterdir()) == []
        assert not Path("/abs.txt").exists()
    finally:
        for leftover in out.iterdir():
            leftover.unlink()
        out.rmdir()
    assert os.stat("/etc/passwd").st_nlink == 1


@pytest.mark.parametrize(
    "data",
    [b"", b"definitely not gzip", b"\x1f\x8b\x08\x00garbage-after-magic"],
    ids=["empty", "garbage", "bad-gzip"],
)
def test_bad_tarball_is_refused(
    server: LiveServer, namespace: str, victim: tuple[TroveClient, str], data: bytes
) -> None:
    trove, snapshot_id = victim
    _plant(server, namespace, snapshot_id, data)
    assert _refused(trove, snapshot_id).status_code == 422


def test_truncated_tarball_is_refused(
    server: LiveServer, namespace: str, victim: tuple[TroveClient, str]
) -> None:
    trove, snapshot_id = victim
    whole = _tgz([(_member("big.bin"), os.urandom(2 * 1024 * 1024)), (_member("z.txt"), b"z")])
    _plant(server, namespace, snapshot_id, whole[: len(whole) // 2])
    assert _refused(trove, snapshot_id).status_code == 422


def test_tampered_tarball_fails_its_checksum(
    server: LiveServer, namespace: str, victim: tuple[TroveClient, str]
) -> None:
    trove, snapshot_id = victim
    # A perfectly safe tarball, but not the one that was stored: the checksum refuses it.
    _plant(server, namespace, snapshot_id, _tgz([(_member("other.txt"), b"swapped")]), fix_row=False)
    error = _refused(trove, snapshot_id)
    assert error.status_code == 422
    assert "checksum" in str(error)


def test_lone_symlink_out_is_restored_inert(
    server: LiveServer, namespace: str, victim: tuple[TroveClient, str]
) -> None:
    # The agent can make this link itself with ln -s (venvs do: bin/python -> /usr/bin/python3);
    # restored, it stays a link that the server never follows.
    trove, snapshot_id = victim
    _plant(server, namespace, snapshot_id, _tgz([(_member("py", tarfile.SYMTYPE, "/etc/shadow"), None)]))
    assert trove.restore_snapshot(snapshot_id) == 0
    assert trove.exec("readlink workspace/py") == "/etc/shadow\n"
    with pytest.raises(TroveError) as caught:
        trove.read_text("workspace/py")
    assert caught.value.status_code == 400


def test_duplicate_names_never_write_through_links(
    server: LiveServer, namespace: str, victim: tuple[TroveClient, str]
) -> None:
    trove, snapshot_id = victim
    out = _outside()
    target = out / "target.txt"
    target.write_text("host file")
    try:
        _plant(
            server,
            namespace,
            snapshot_id,
            _tgz([(_member("f", tarfile.SYMTYPE, str(target)), None), (_member("f"), b"replaces the link")]),
        )
        assert trove.restore_snapshot(snapshot_id) == 1
        # trove-agent extracts with GNU tar (both backends), which makes a link to an absolute
        # target last, in place of a placeholder: the name may end as that inert link. Either
        # way nothing is written through it and reading it is refused.
        outcome: object
        try:
            outcome = trove.read_text("workspace/f")
        except TroveError as exc:
            outcome = (exc.status_code, "resolves outside the namespace" in str(exc))
        assert outcome in ("replaces the link", (400, True))
        assert target.read_text() == "host file"
    finally:
        target.unlink()
        out.rmdir()


def test_store_dying_mid_restore_changes_nothing(namespace: str) -> None:
    with start_s3() as s3, start_server(snapshot_daily=False, **s3.settings("trove-dying")) as live:
        with client(live, namespace) as trove:
            trove.exec("head -c 90000000 /dev/urandom > workspace/big.bin")
            trove.write("workspace/small.txt", "before")
            snap = trove.create_snapshot()
            trove.write("workspace/small.txt", "after")
            before = _fingerprint(trove)
            # The agent extracts beside the tree, inside the namespace, and swaps it in at the end.
            workspace = ns_dir(live, namespace)

            def kill_when_extracting() -> None:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if any(workspace.glob(".trove-restore-*/big.bin")):
                        s3.process.send_signal(signal.SIGKILL)
                        return
                    time.sleep(0.005)

            killer = threading.Thread(target=kill_when_extracting)
            killer.start()
            with pytest.raises(TroveError) as caught:
                trove.restore_snapshot(snap.snapshot_id)
            killer.join()
            assert s3.process.wait(timeout=10) == -signal.SIGKILL
            assert caught.value.status_code == 503
            assert _fingerprint(trove) == before
            assert trove.read_text("workspace/small.txt") == "after"
            assert list(workspace.glob(".trove-*")) == []
            # The store stays down: a second restore is refused up front, still changing nothing.
            with pytest.raises(TroveError) as again:
                trove.restore_snapshot(snap.snapshot_id)
            assert again.value.status_code == 503
            assert _fingerprint(trove) == before


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 48 MiB tmpfs as the data dir, so a restore can really run out of space."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = make_data_dir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0711", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def test_disk_full_mid_restore_changes_nothing(small_disk: Path, namespace: str) -> None:
    snapshot_dir = make_data_dir()
    # No data-dir reserve: the restore itself must run into ENOSPC (tests/storage covers the reserve).
    with start_server(
        data_dir=small_disk, snapshot_dir=snapshot_dir, snapshot_daily=False, data_reserve_mb=0
    ) as live:
        with client(live, namespace) as trove:
            trove.exec("head -c 12000000 /dev/urandom > workspace/big.bin")
            trove.write("workspace/small.txt", "before")
            snap = trove.create_snapshot()
            trove.write("workspace/small.txt", "after")
            before = _fingerprint(trove)
            free = os.statvfs(small_disk)
            filler = small_disk / "filler"
            with filler.open("wb") as handle:  # leave ~4 MiB: less than the restore needs
                handle.truncate(free.f_bavail * free.f_frsize - 4 * 1024 * 1024)
                os.posix_fallocate(handle.fileno(), 0, free.f_bavail * free.f_frsize - 4 * 1024 * 1024)
            with pytest.raises(TroveError) as caught:
                trove.restore_snapshot(snap.snapshot_id)
            assert caught.value.status_code == 507
            filler.unlink()
            assert _fingerprint(trove) == before
            assert trove.read_text("workspace/small.txt") == "after"
            assert trove.restore_snapshot(snap.snapshot_id) == 2
            assert trove.read_text("workspace/small.txt") == "before"
