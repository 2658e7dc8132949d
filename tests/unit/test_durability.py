"""Acknowledged means durable: fsync before every rename or swap, the renames' directories after.

A power loss cannot be tested here. What can be: the SQLite setting on a live connection,
the local runtime's fsync calls (a spy that records which inode each real ``os.fsync`` call
flushed, then calls it), and the system calls of trove-agent and of the agentless fallback
script under strace.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.unit.test_agent import _tarball, agent, chunks
from tests.unit.test_fallback_files import LocalShell
from trove_api.runtimes.channel.restore import AgentRestore, restore
from trove_api.runtimes.kubernetes.fallback import snapshots as fallback_snapshots
from trove_api.runtimes.kubernetes.fallback.files import PodFiles, Shell
from trove_api.runtimes.local import tarball
from trove_api.runtimes.local.runtime import LocalRuntime
from trove_api.runtimes.local.sandbox import Limits
from trove_api.stores.db import Database
from trove_core.runtime import NamespaceRef

STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(STRACE is None, reason="strace is not installed")
TREE = {"a.txt": b"A", "d/b.txt": b"B", "d/e/c.txt": b"C", "f/g/h.txt": b"H"}


def test_sqlite_commits_are_synced_to_disk(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'trove.db'}")
    try:
        with db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        db.dispose()


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(what, inode) in call order: ``("fsync", ino)`` per real fsync, ``("swap", 0)`` at swaps."""
    calls: list[tuple[str, int]] = []
    real_fsync, real_swap = os.fsync, tarball._swap_in

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def swap_in(new_root: Path, target: Path, uid: int | None) -> None:
        calls.append(("swap", 0))
        real_swap(new_root, target, uid)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(tarball, "_swap_in", swap_in)
    return calls


def _runtime(tmp_path: Path) -> tuple[LocalRuntime, NamespaceRef]:
    runtime = LocalRuntime(
        tmp_path / "data",
        sandbox=False,
        network=False,
        uid_base=100000,
        limits=Limits(60, 1 << 20, 64, None),
        memory_bytes=1 << 30,
    )
    return runtime, NamespaceRef(workspace_id="ws-1", name="ns", uid=None)


def _inodes(root: Path) -> dict[str, int]:
    found = {".": root.stat().st_ino}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = path.lstat().st_ino
    return found


async def test_a_restore_is_on_disk_before_the_swap_and_the_swap_before_the_answer(
    tmp_path: Path, fsynced: list[tuple[str, int]]
) -> None:
    runtime, ns = _runtime(tmp_path)
    await runtime.provision(ns)
    (runtime.root / "ws-1" / "ns" / "old.txt").write_text("old")
    await runtime.import_tar(ns, chunks(_tarball(TREE)))
    target = runtime.root / "ws-1" / "ns"
    swap = fsynced.index(("swap", 0))
    before = {ino for _, ino in fsynced[:swap]}
    after = {ino for _, ino in fsynced[swap:]}
    restored = _inodes(target)
    assert set(restored) == {".", "a.txt", "d", "d/b.txt", "d/e", "d/e/c.txt", "f", "f/g", "f/g/h.txt"}
    missing = sorted(rel for rel, ino in restored.items() if ino not in before)
    assert not missing, f"not fsynced before the swap: {missing}"
    # The exchange changed two directories' entries: the namespaces' parent and staging.
    assert target.parent.stat().st_ino in after
    assert runtime.staging.stat().st_ino in after


async def test_a_write_into_new_directories_makes_each_new_entry_durable(
    tmp_path: Path, fsynced: list[tuple[str, int]]
) -> None:
    runtime, ns = _runtime(tmp_path)
    await runtime.provision(ns)
    await runtime.write(ns, "new/deeper/file.txt", chunks(b"data"), 1 << 20)
    target = runtime.root / "ws-1" / "ns"
    synced = {ino for _, ino in fsynced}
    for path in (target, target / "new", target / "new" / "deeper", target / "new" / "deeper" / "file.txt"):
        assert path.stat().st_ino in synced, path


def _strace(log: Path) -> list[str]:
    assert STRACE is not None
    return [
        STRACE,
        "-f",
        "-qq",
        "-o",
        str(log),
        "-e",
        "trace=fsync,fdatasync,syncfs,sync,rename,renameat,renameat2",
    ]


def _calls(log: Path) -> list[str]:
    """The traced calls' names in order (strace -f prefixes each line with a pid)."""
    names = []
    for line in log.read_text().splitlines():
        match = re.match(r"^(?:\d+\s+)?(\w+)\(", line)
        if match:
            names.append(match.group(1))
    return names


def _fallback(root: Path, log: Path) -> PodFiles:
    async def spawn(argv: Sequence[str]) -> Shell:
        return await LocalShell.start([*_strace(log), *argv])

    return PodFiles(spawn, str(root))


@needs_strace
async def test_the_fallback_script_syncs_a_write_before_and_after_its_rename(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    log = tmp_path / "strace.log"
    await _fallback(root, log).write("sub/file.txt", chunks(b"payload"), 1 << 20)
    assert (root / "sub" / "file.txt").read_bytes() == b"payload"
    calls = _calls(log)
    renames = [i for i, name in enumerate(calls) if name.startswith("rename")]
    syncs = [i for i, name in enumerate(calls) if name in ("fsync", "fdatasync", "syncfs", "sync")]
    assert renames, calls
    assert any(i < renames[0] for i in syncs), calls
    assert any(i > renames[-1] for i in syncs), calls


@needs_strace
async def test_the_fallback_script_syncs_a_restore_before_and_after_its_swap(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "old.txt").write_text("old")
    log = tmp_path / "strace.log"
    count = await restore(fallback_snapshots.ShellRestore(_fallback(root, log)), chunks(_tarball(TREE)))
    assert count == len(TREE)
    calls = _calls(log)
    renames = [i for i, name in enumerate(calls) if name.startswith("rename")]
    syncs = [i for i, name in enumerate(calls) if name in ("syncfs", "sync")]
    assert renames, calls
    assert any(i < renames[0] for i in syncs), calls
    assert any(i > renames[-1] for i in syncs), calls


@needs_strace
async def test_trove_agent_syncs_a_restore_before_and_after_its_swap(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "old.txt").write_text("old")
    log = tmp_path / "strace.log"
    async with agent(root, wrapper=_strace(log)) as session:
        log.write_text("")  # start-up's own calls are not the restore's
        count = await restore(AgentRestore(session), chunks(_tarball(TREE)))
    assert count == len(TREE)
    calls = _calls(log)
    renames = [i for i, name in enumerate(calls) if name.startswith("rename")]
    syncs = [i for i, name in enumerate(calls) if name in ("syncfs", "sync")]
    assert renames, calls
    assert any(i < renames[0] for i in syncs), calls
    assert any(i > renames[-1] for i in syncs), calls
