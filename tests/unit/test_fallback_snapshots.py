"""Snapshots without trove-agent: the fallback script's export and import against the agent's.

The script runs as a local ``sh`` (``test_fallback_files.LocalShell``); e2e runs it in a pod.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from tests.unit.test_agent import _tarball, agent, chunks
from tests.unit.test_fallback_files import both, files
from trove_api.runtimes.channel.restore import AgentRestore, restore
from trove_api.runtimes.kubernetes.fallback import snapshots as fallback_snapshots
from trove_core.errors import SnapshotCorruptError, TroveError


def members(archive: bytes, root: Path) -> list[tuple[str, str, bytes, str]]:
    """What a tarball holds: (name, type, content, link target with ``root`` as <root>), by name."""
    found = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar:
            data = b""
            if member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                data = extracted.read()
            found.append(
                (member.name, member.type.decode(), data, member.linkname.replace(str(root), "<root>"))
            )
    return sorted(found)


def tree(root: Path) -> dict[str, bytes | str]:
    """Every name under ``root``: file contents, link targets, "dir" for directories."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = path.read_bytes()
    return found


def simple_tree(root: Path) -> None:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_text("print('hi')\n")
    (root / "data.bin").write_bytes(os.urandom(300_000))
    (root / ".env").write_text("A=1\n")
    (root / "we ird\nname").write_text("nl")
    (root / "alias").symlink_to("src/pkg")


async def test_export_holds_what_the_agents_holds(tmp_path: Path) -> None:
    async with both(tmp_path) as (session, fallback, agent_root, fallback_root):
        (fallback_root / ".trove-upload-abc").write_text("half an upload")  # never in a snapshot
        by_agent = b"".join([c async for c in session.export_tar()])
        by_script = b"".join([c async for c in fallback_snapshots.export_tar(fallback)])
    assert members(by_script, fallback_root) == members(by_agent, agent_root)
    assert any(name == "we ird dir/new\nline" for name, *_ in members(by_script, fallback_root))


async def test_import_swaps_the_tree_and_leaves_nothing_behind(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    simple_tree(source)
    async with agent(source) as session:
        archive = b"".join([c async for c in session.export_tar()])
    root = tmp_path / "root"
    root.mkdir()
    (root / "old.txt").write_text("old")
    (root / "src").mkdir()
    (root / "src" / "stale.py").write_text("stale")
    pieces = [archive[i : i + 50_000] for i in range(0, len(archive), 50_000)]
    count = await restore(fallback_snapshots.ShellRestore(files(root)), chunks(*pieces))
    assert count == 4  # regular files
    assert tree(root) == tree(source)


async def test_a_round_trip_between_agent_and_script_is_exact(tmp_path: Path) -> None:
    one, two, three = (tmp_path / n for n in ("one", "two", "three"))
    for root in (one, two, three):
        root.mkdir()
    simple_tree(one)
    archive = b"".join([c async for c in fallback_snapshots.export_tar(files(one))])
    async with agent(two) as session:
        await restore(AgentRestore(session), chunks(archive))
        again = b"".join([c async for c in session.export_tar()])
    await restore(fallback_snapshots.ShellRestore(files(three)), chunks(again))
    assert tree(two) == tree(one)
    assert tree(three) == tree(one)


@pytest.mark.parametrize(
    "archive",
    [
        _tarball({"../escape": b"x"}),
        _tarball({"link/x": b"through"}, symlinks={"link": "/etc"}),
        b"not a tarball at all" * 100,
        _tarball({"big.bin": os.urandom(200_000)})[:-5000],  # cut off
    ],
    ids=["dot-dot", "through-a-symlink", "garbage", "truncated"],
)
async def test_a_refused_or_broken_snapshot_leaves_the_tree_as_it_was(tmp_path: Path, archive: bytes) -> None:
    root = tmp_path / "root"
    root.mkdir()
    simple_tree(root)
    before = tree(root)
    with pytest.raises(SnapshotCorruptError):
        await restore(fallback_snapshots.ShellRestore(files(root)), chunks(archive))
    assert tree(root) == before  # nothing extracted in, no staging left beside it
    assert (tmp_path / "escape").exists() is False


async def test_without_gnu_tar_snapshots_say_what_is_missing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tar"
    fake.write_text("#!/bin/sh\necho 'tar (busybox) 1.36.1'\n")
    fake.chmod(0o755)
    root = tmp_path / "root"
    root.mkdir()
    simple_tree(root)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    with pytest.raises(TroveError, match="need GNU tar in the sandbox image"):
        async for _ in fallback_snapshots.export_tar(files(root, env)):
            pass
    before = tree(root)
    with pytest.raises(TroveError, match="GNU tar"):
        await restore(fallback_snapshots.ShellRestore(files(root, env)), chunks(_tarball({"a": b"a"})))
    assert tree(root) == before
