"""trove-agent finishes a restore's swap that a crash cut off before it serves anything.

The swap moves the old entries aside, renames the complete new tree to ``.trove-new-*`` (the
commit point), then moves its entries in. A kill -9 of the agent, or of the server whose
sandbox it runs in, can stop it anywhere; the next agent rolls forward or back.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path

from tests.unit.test_agent import agent

DEAD = "abcdef012345"


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _make(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


async def _served_tree(root: Path) -> dict[str, str]:
    async with agent(root) as session:
        entries, _ = await session.list("", recursive=True, max_entries=100, max_depth=8)
    assert {e.rel for e in entries if not e.is_dir} == set(_tree(root))
    return _tree(root)


async def test_a_committed_swap_is_rolled_forward(tmp_path: Path) -> None:
    _make(
        tmp_path, {"a.txt": "new a", f".trove-new-{DEAD}/b.txt": "new b", f".trove-old-{DEAD}/old.txt": "old"}
    )
    assert await _served_tree(tmp_path) == {"a.txt": "new a", "b.txt": "new b"}


async def test_a_swap_before_its_commit_is_rolled_back(tmp_path: Path) -> None:
    _make(
        tmp_path,
        {"x.txt": "old x", f".trove-old-{DEAD}/y.txt": "old y", f".trove-restore-{DEAD}/new.txt": "new"},
    )
    assert await _served_tree(tmp_path) == {"x.txt": "old x", "y.txt": "old y"}


async def test_a_swap_left_deleting_the_old_tree_keeps_the_new_one(tmp_path: Path) -> None:
    _make(tmp_path, {"a.txt": "new a", f".trove-old-{DEAD}/half/gone.txt": "old"})
    assert await _served_tree(tmp_path) == {"a.txt": "new a"}


async def test_a_cut_off_extraction_is_dropped(tmp_path: Path) -> None:
    _make(tmp_path, {"keep.txt": "k", f".trove-restore-{DEAD}/partial.txt": "p"})
    assert await _served_tree(tmp_path) == {"keep.txt": "k"}


async def test_a_restore_whose_agent_still_runs_is_left_alone(tmp_path: Path) -> None:
    # Its agent (another replica's, in another pid namespace) holds a lock on the staged tree.
    _make(tmp_path, {f".trove-restore-{DEAD}/partial.txt": "p", f".trove-old-{DEAD}/old.txt": "o"})
    held = os.open(tmp_path / f".trove-restore-{DEAD}", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        async with agent(tmp_path):
            pass
    finally:
        os.close(held)
    assert (tmp_path / f".trove-restore-{DEAD}" / "partial.txt").read_text() == "p"
    assert (tmp_path / f".trove-old-{DEAD}" / "old.txt").read_text() == "o"


async def test_cut_off_uploads_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    _make(tmp_path, {"d/.trove-upload-dead": "half", ".trove-upload-live": "writing", "keep.txt": "k"})
    held = os.open(tmp_path / ".trove-upload-live", os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # as the agent writing it holds it
        async with agent(tmp_path):
            deadline = time.monotonic() + 30
            while (tmp_path / "d" / ".trove-upload-dead").exists():
                assert time.monotonic() < deadline, "the cut-off upload was never swept"
                await asyncio.sleep(0.01)
    finally:
        os.close(held)
    assert (tmp_path / ".trove-upload-live").read_text() == "writing"
    assert (tmp_path / "keep.txt").read_text() == "k"
