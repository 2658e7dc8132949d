"""The agentless file fallback's script run by a local ``sh``, answer for answer against trove-agent.

Both get an identical tree (odd names, symlinks in and out, a FIFO); every listing, read and
error must match. The pod exec transport is the only part not exercised here (tests/e2e does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from tests.unit.test_agent import agent, chunks
from trove_api.runtimes.channel.session import AgentSession
from trove_api.runtimes.kubernetes.fallback.files import PodFiles, Shell
from trove_core.errors import PayloadTooLargeError, TroveError


class LocalShell(Shell):
    """The fallback script as a local process: the same bytes a pod exec stream would carry."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__()
        self.proc = proc
        self._discard = False
        self._pumps = [asyncio.create_task(self._pump_out()), asyncio.create_task(self._pump_err())]
        self._waiter = asyncio.create_task(self._wait())

    @classmethod
    async def start(cls, argv: Sequence[str], env: dict[str, str] | None = None) -> LocalShell:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        return cls(proc)

    async def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(65536):
            if not self._discard:
                await self.stdout(chunk)

    async def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self.stderr_data(chunk)

    async def _wait(self) -> None:
        await asyncio.gather(*self._pumps)
        self.ended(await self.proc.wait())

    async def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        with contextlib.suppress(ConnectionError):
            await self.proc.stdin.drain()

    async def close(self) -> None:
        # Like closing the exec stream: stdin ends, nobody reads stdout any more.
        self._discard = True
        self._room.set()
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self._waiter


def files(root: Path, env: dict[str, str] | None = None) -> PodFiles:
    async def spawn(argv: Sequence[str]) -> Shell:
        return await LocalShell.start(argv, env)

    return PodFiles(spawn, str(root))


def build_tree(root: Path, outside: Path) -> None:
    root.mkdir()
    for rel in ["docs/deep/er/est", "empty", "we ird dir", "-dash", "ünï"]:
        (root / rel).mkdir(parents=True)
    contents = {
        "a.txt": b"alpha",
        "B.txt": b"upper",
        ".hidden": b"h",
        "docs/readme.md": b"# hi\n",
        "docs/deep/one.bin": bytes(range(256)),
        "docs/deep/er/est/leaf": b"leaf",
        "we ird dir/new\nline": b"nl",
        "we ird dir/sp ace": b"sp",
        "-dash/-f": b"dash",
        "ünï/ñ.txt": "ñ".encode(),
    }
    for rel, data in contents.items():
        (root / rel).write_bytes(data)
    (root / "inside").symlink_to("docs")
    (root / "inside-file").symlink_to("docs/readme.md")
    (root / "out").symlink_to(outside)
    (root / "out-file").symlink_to(outside / "secret")
    (root / "dangling").symlink_to("nowhere")
    (root / "deep-dangling").symlink_to("docs/gone/../../new-dir/file")
    (root / "loop").symlink_to("loop")
    (root / "up").symlink_to("../outside")
    (root / "abs").symlink_to(root / "docs")
    (root / "docs" / "back").symlink_to("../a.txt")
    os.mkfifo(root / "fifo")
    # The same nanosecond mtimes in both copies, deepest first (a child's change touches its parent).
    paths = sorted(root.rglob("*"), key=lambda p: (-len(p.parts), str(p)))
    for i, path in enumerate([*paths, root]):
        stamp = 1_700_000_000_123_456_789 + i * 1_000_000_007
        os.utime(path, ns=(stamp, stamp), follow_symlinks=False)


@contextlib.asynccontextmanager
async def both(tmp_path: Path) -> AsyncIterator[tuple[AgentSession, PodFiles, Path, Path]]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s3cret")
    build_tree(tmp_path / "a", outside)
    build_tree(tmp_path / "f", outside)
    async with agent(tmp_path / "a") as session:
        yield session, files(tmp_path / "f"), tmp_path / "a", tmp_path / "f"


async def outcome(call: object) -> object:
    try:
        result = await call  # type: ignore[misc]
    except TroveError as exc:
        # Not the detail: the agent sometimes names the resolved path, the fallback the caller's.
        return (type(exc).__name__, exc.code)
    if hasattr(result, "aclose"):  # an open file: what it holds
        try:
            return result.stat, b"".join([c async for c in result.iter_bytes(0, result.stat.size)])
        finally:
            await result.aclose()
    return result


LIST_PATHS = ["", "docs", "inside", "we ird dir", "-dash", "ünï", "empty"]
BAD_PATHS = [
    *["nope", "a.txt/x", "docs/nope/x", "out", "out/secret", "out-file", "fifo", "dangling", "deep-dangling"],
    *["loop", "loop/x", "up", "up/secret", "abs/deep", "docs/back", "docs/back/x"],
]


@pytest.mark.parametrize("recursive", [False, True])
async def test_listings_match_the_agent(tmp_path: Path, recursive: bool) -> None:
    async with both(tmp_path) as (session, fallback, _, _):
        for rel in LIST_PATHS + BAD_PATHS + ["a.txt"]:
            for max_entries, max_depth in [(1000, 20), (1, 20), (4, 20), (7, 2), (1000, 1), (9, 3)]:
                kwargs = {"recursive": recursive, "max_entries": max_entries, "max_depth": max_depth}
                expected = await outcome(session.list(rel, **kwargs))
                got = await outcome(fallback.list(rel, **kwargs))
                assert got == expected, (rel, max_entries, max_depth)


async def test_reads_and_read_errors_match_the_agent(tmp_path: Path) -> None:
    async with both(tmp_path) as (session, fallback, _, _):
        for rel in [
            "a.txt",
            "docs/deep/one.bin",
            "we ird dir/new\nline",
            "inside-file",
            "-dash/-f",
            "ünï/ñ.txt",
        ]:
            mine, theirs = await fallback.open_file(rel), await session.open_file(rel)
            try:
                assert mine.stat == theirs.stat
                for start, end in [(0, mine.stat.size), (1, 3), (2, 2), (0, 1)]:
                    got = b"".join([c async for c in mine.iter_bytes(start, end)])
                    assert got == b"".join([c async for c in theirs.iter_bytes(start, end)])
            finally:
                await mine.aclose()
                await theirs.aclose()
        for rel in [*BAD_PATHS, "docs", "inside", "out-file", "empty"]:
            assert await outcome(fallback.open_file(rel)) == await outcome(session.open_file(rel)), rel


async def test_deletes_match_the_agent(tmp_path: Path) -> None:
    async with both(tmp_path) as (session, fallback, agent_root, fallback_root):
        for rel in [*BAD_PATHS, "a.txt", "docs", "inside", "inside-file", "we ird dir/new\nline", "-dash"]:
            assert await outcome(fallback.delete(rel)) == await outcome(session.delete(rel)), rel
        assert sorted(os.listdir(fallback_root)) == sorted(os.listdir(agent_root))
        assert (tmp_path / "outside" / "secret").read_text() == "s3cret"


async def test_writes_match_the_agent(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    pieces = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    async with both(tmp_path) as (session, fallback, _, fallback_root):
        for rel in [
            "new/sub/file.bin",
            "a.txt",
            "inside-file",
            "inside/x",
            "we ird dir/new\nline",
            *BAD_PATHS,
        ]:
            mine = await outcome(fallback.write(rel, chunks(*pieces), 1 << 30))
            assert mine == await outcome(session.write(rel, chunks(*pieces), 1 << 30)), rel
            if mine == len(data):
                assert (fallback_root / rel).resolve().read_bytes() == data
            assert await outcome(fallback.write(rel, chunks(b"x"), 10)) == await outcome(
                session.write(rel, chunks(b"x"), 10)
            ), rel
        for rel in ["", "docs", "empty"]:
            assert await outcome(fallback.write(rel, chunks(b"x"), 10)) == await outcome(
                session.write(rel, chunks(b"x"), 10)
            ), rel
        assert (tmp_path / "outside" / "secret").read_text() == "s3cret"
        # Symlinks are written through (to their target inside), not replaced, by both.
        assert (fallback_root / "inside-file").is_symlink()
        assert stat.S_IMODE((fallback_root / "new/sub/file.bin").stat().st_mode) == 0o644
        assert not [p for p in fallback_root.rglob(".trove-upload-*")]


async def test_over_the_limit_and_broken_uploads_leave_nothing(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    fallback = files(tmp_path / "ws")
    with pytest.raises(PayloadTooLargeError):
        await fallback.write("big.bin", chunks(b"x" * 600_000, b"y" * 600_000), 1_000_000)

    async def broken() -> AsyncIterator[bytes]:
        yield b"z" * 2_000_000
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await fallback.write("cut.bin", broken(), 1 << 30)
    assert os.listdir(tmp_path / "ws") == []


async def test_without_gnu_find_the_sh_loop_lists_the_same(tmp_path: Path) -> None:
    """Busybox-style images: no ``find -printf``, so a sh loop with ``stat`` lists (whole seconds)."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "find").write_text(
        '#!/bin/sh\nfor a; do [ "$a" = -printf ] && { echo "find: unknown predicate" >&2; exit 1; }; done\n'
        'exec /usr/bin/find "$@"\n'
    )
    (shim / "find").chmod(0o755)
    env = {"PATH": f"{shim}:/usr/bin:/bin"}
    async with both(tmp_path) as (session, _, _, fallback_root):
        fallback = files(fallback_root, env)
        for rel in LIST_PATHS:
            expected, _ = await session.list(rel, recursive=True, max_entries=1000, max_depth=20)
            got, _ = await fallback.list(rel, recursive=True, max_entries=1000, max_depth=20)
            assert [(e.rel, e.is_dir, e.size, e.mtime_ns // 10**9) for e in got] == [
                (e.rel, e.is_dir, e.size, e.mtime_ns // 10**9) for e in expected
            ], rel
        reader = await fallback.open_file("a.txt")
        try:
            assert b"".join([c async for c in reader.iter_bytes(0, reader.stat.size)]) == b"alpha"
        finally:
            await reader.aclose()
