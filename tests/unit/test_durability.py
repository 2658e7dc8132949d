"""Acknowledged means durable: fsync before every rename or swap, the renames' directories after.

A power loss cannot be tested here. What can be: the SQLite setting on a live connection,
and the system calls of trove-agent (which does the local runtime's file operations too) and of
the agentless fallback script under strace.
"""

from __future__ import annotations

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
from trove_api.stores.db import Database

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


@needs_strace
async def test_trove_agent_makes_each_new_directory_of_a_write_durable(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    log = tmp_path / "strace.log"
    wrapper = [*_strace(log)[:-2], "-y", "-e", "trace=fsync"]
    async with agent(root, wrapper=wrapper) as session:
        await session.write("new/deeper/file.txt", chunks(b"data"), 1 << 20)
    assert (root / "new" / "deeper" / "file.txt").read_bytes() == b"data"
    synced = set(re.findall(r"fsync\(\d+<([^>]*)>", log.read_text()))
    # Each directory that got a new entry, and the file itself (under its temp name).
    for directory in (root, root / "new", root / "new" / "deeper"):
        assert str(directory) in synced, sorted(synced)
    assert any(Path(path).name.startswith(".trove-upload-") for path in synced), sorted(synced)


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
