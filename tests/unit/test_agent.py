"""trove-agent and its client session, over a local pipe (the same bytes the pod exec stream carries)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from trove_api.runtimes.channel import AGENT_SOURCE
from trove_api.runtimes.channel import fds as channel_fds
from trove_api.runtimes.channel.fds import FdChannel, HandedFile, new_pair
from trove_api.runtimes.channel.session import AgentSession
from trove_core.errors import IsADirectoryError_, PathNotFoundError, PathRejectedError, PayloadTooLargeError
from trove_core.runtime import ExecSpec

AGENT = AGENT_SOURCE


@contextlib.asynccontextmanager
async def agent(
    root: Path,
    prefix: bytes = b"",
    wrapper: Sequence[str] = (),
    *,
    python: str = sys.executable,
    script: Path = AGENT,
    env: dict[str, str] | None = None,
    fds: bool = False,
) -> AsyncIterator[AgentSession]:
    """``prefix`` stands for the exec websocket's stdin channel byte: checked and stripped here;
    ``wrapper`` runs the agent under another command (e.g. strace, setpriv), ``python`` and
    ``script`` are the interpreter and agent file it runs, ``env`` its whole environment;
    ``fds``: the local transport's descriptor socket beside the pipes (``channel/fds.py``)."""
    api_end, agent_end = new_pair() if fds else (None, None)
    proc = await asyncio.create_subprocess_exec(
        *wrapper,
        python,
        str(script),
        str(root),
        *([f"--fds={agent_end.fileno()}"] if agent_end is not None else []),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        pass_fds=[agent_end.fileno()] if agent_end is not None else [],
    )
    if agent_end is not None:
        agent_end.close()
    assert proc.stdin is not None
    assert proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def send(data: bytes | bytearray | memoryview) -> None:
        assert data[: len(prefix)] == prefix
        stdin.write(data[len(prefix) :])
        await stdin.drain()

    session = AgentSession(send, prefix=prefix)

    async def pump() -> None:
        while chunk := await stdout.read(65536):
            session.feed(chunk)
        session.connection_lost()

    reader = asyncio.create_task(pump())
    try:
        hello = await session.hello
        if api_end is not None:
            assert hello["fds"] is True
            session.fds, api_end = FdChannel(api_end, os.stat(root).st_dev), None
        yield session
    finally:
        if api_end is not None:  # the agent never said hello: the session did not take it
            api_end.close()
        stdin.close()
        await proc.wait()
        await reader
        if session.fds is not None:
            session.fds.close()


@pytest.fixture(params=[False, True], ids=["framed", "fds"])
def fds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """The framed channel (both backends), or the local transport's handed-over descriptors
    (for every upload, however small: by default small ones go framed)."""
    if request.param:
        monkeypatch.setattr(channel_fds, "HANDED_MIN_BYTES", 0)
    return bool(request.param)


def spec(script: str, stdin: bytes | None = None, timeout: float = 10, limit: int = 1 << 20) -> ExecSpec:
    return ExecSpec(script=script, stdin=stdin, timeout_s=timeout, output_limit=limit)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_exec_streams_and_exit_codes(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        out = await session.exec(spec("echo out; echo err >&2; exit 3"), 1 << 20)
        assert (out.stdout, out.stderr, out.exit_code, out.timed_out) == (b"out\n", b"err\n", 3, False)
        binary = await session.exec(spec("head -c 4 | od -An -tx1", stdin=b"\x00\xff\x01\n"), 1 << 20)
        assert binary.stdout.split() == [b"00", b"ff", b"01", b"0a"]


async def test_concurrent_commands_are_kept_apart(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        results = await asyncio.gather(
            *[session.exec(spec(f"sleep 0.2; echo {i}"), 1 << 20) for i in range(20)]
        )
        assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(20)]


async def test_timeout_kills_the_whole_tree(tmp_path: Path) -> None:
    # A duration no other test uses: `ps` sees the whole host, where other runs may sleep too.
    nap = f"300.{secrets.randbelow(10**6):06d}"
    async with agent(tmp_path) as session:
        out = await session.exec(
            spec(
                f"setsid sleep {nap} & echo $! > /tmp/trove-agent-test-$$; echo started; sleep {nap}",
                timeout=1,
            ),
            1 << 20,
        )
        assert out.timed_out
        assert out.stdout == b"started\n"
        # The setsid'd child (its own session and group) carried the marker and died too.
        check = await session.exec(spec(f"ps -eo args | grep -c '^sleep {nap}$' || true"), 1 << 20)
        assert check.stdout.strip() == b"0"


async def test_output_cap(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        out = await session.exec(spec("head -c 100000 /dev/zero", limit=1000), 1 << 20)
        assert len(out.stdout) == 1000
        assert out.stdout_truncated
        assert out.exit_code == 0


async def test_files_round_trip(tmp_path: Path, fds: bool) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    async with agent(tmp_path, fds=fds) as session:
        size = await session.write("a/b/c.bin", chunks(data[:1000], data[1000:]), 10 << 20)
        assert size == len(data)
        assert (tmp_path / "a/b/c.bin").read_bytes() == data
        reader = await session.open_file("a/b/c.bin")
        assert isinstance(reader, HandedFile) == fds  # the bytes come through the descriptor
        assert reader.stat.size == len(data)
        got = b"".join([c async for c in reader.iter_bytes(0, len(data))])
        part = b"".join([c async for c in reader.iter_bytes(10, 20)])
        await reader.aclose()
        assert got == data
        assert part == data[10:20]
        entries, truncated = await session.list("", recursive=True, max_entries=100, max_depth=10)
        assert [(e.rel, e.is_dir) for e in entries] == [("a", True), ("a/b", True), ("a/b/c.bin", False)]
        assert not truncated
        await session.delete("a")
        assert not (tmp_path / "a").exists()
        with pytest.raises(PathNotFoundError):
            await session.delete("a")


@pytest.mark.parametrize(("prefix", "piece"), [(b"", 65536), (b"\x00", 65536), (b"\x00", 100_003)])
async def test_uploads_in_many_pieces_arrive_whole(tmp_path: Path, prefix: bytes, piece: int) -> None:
    # Frames are filled in place behind the transport's prefix and the agent header; a body in
    # small pieces spans several frames (a piece may straddle two), and a last short frame follows.
    data = os.urandom(3 * 1024 * 1024 + 4099)
    pieces = [data[i : i + piece] for i in range(0, len(data), piece)]
    async with agent(tmp_path, prefix) as session:
        assert await session.write("up.bin", chunks(*pieces), 10 << 20) == len(data)
        assert await session.exec(spec("true"), 1 << 20)  # the channel still frames correctly
    assert (tmp_path / "up.bin").read_bytes() == data


async def test_a_large_upload_is_written_back_as_it_arrives_and_lands_whole(
    tmp_path: Path, fds: bool
) -> None:
    # Past WRITEBACK_BYTES the agent asks the kernel to start writing each range out while the
    # rest still arrives (sync_file_range); the file must still be exactly what was sent.
    data = os.urandom(20 * 1024 * 1024 + 12345)
    pieces = [data[i : i + 100_003] for i in range(0, len(data), 100_003)]
    async with agent(tmp_path, fds=fds) as session:
        assert await session.write("big.bin", chunks(*pieces), 64 << 20) == len(data)
    assert (tmp_path / "big.bin").read_bytes() == data


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="Linux pipes only")
def test_agent_widens_its_pipes(tmp_path: Path) -> None:
    """Both pipes grow to 1 MiB (or the system's cap): a transfer takes far fewer reads and wakeups."""
    expected = min(int(Path("/proc/sys/fs/pipe-max-size").read_text()), 1 << 20)
    with subprocess.Popen(
        [sys.executable, str(AGENT), str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stdout.read(9)  # HELLO's header: the agent is up and has set its pipes
        sizes = [fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) for pipe in (proc.stdin, proc.stdout)]
        proc.stdin.close()
        proc.stdout.read()
    assert sizes == [expected, expected]


async def test_small_uploads_go_framed_and_large_ones_through_the_descriptor(tmp_path: Path) -> None:
    async with agent(tmp_path, fds=True) as session:
        assert session.fds is not None
        handed: list[int] = []
        expect = session.fds.expect
        session.fds.expect = lambda rid: (handed.append(rid), expect(rid))[1]  # type: ignore[method-assign]
        small, large = b"s" * 1000, os.urandom(channel_fds.HANDED_MIN_BYTES + 1)
        assert await session.write("small", chunks(small), 10 << 20) == len(small)
        assert handed == []
        assert await session.write("large", chunks(large[:1000], large[1000:]), 10 << 20) == len(large)
        assert len(handed) == 1
    assert (tmp_path / "small").read_bytes() == small
    assert (tmp_path / "large").read_bytes() == large


async def test_a_refused_upload_still_arriving_stops_reading_its_body(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "out").symlink_to(tmp_path)
    stopped = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        try:
            yield b"x" * 1000
            await asyncio.Event().wait()  # a client that never sends the rest
            yield b"never"
        finally:
            stopped.set()

    async with agent(root, fds=True) as session:
        with pytest.raises(PathRejectedError):
            await asyncio.wait_for(session.write("out/x", slow_body(), 10 << 20), 5)
        await asyncio.wait_for(stopped.wait(), 5)  # nothing is left reading the body


async def test_write_limit_leaves_nothing_behind(tmp_path: Path, fds: bool) -> None:
    async with agent(tmp_path, fds=fds) as session:
        with pytest.raises(PayloadTooLargeError):
            await session.write("big", chunks(b"x" * 100, b"y" * 100), 150)
        assert list(tmp_path.iterdir()) == []


async def test_symlink_escapes_are_refused(tmp_path: Path, fds: bool) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_text("s")
    (root / "out").symlink_to(tmp_path)
    (root / "leak").symlink_to(tmp_path / "secret")
    async with agent(root, fds=fds) as session:
        with pytest.raises(PathRejectedError):
            await session.open_file("leak")
        with pytest.raises(PathRejectedError):
            await session.write("out/x", chunks(b"x"), 10)
        with pytest.raises(PathRejectedError):
            await session.list("out", recursive=False, max_entries=10, max_depth=1)
        with pytest.raises(PathRejectedError):  # as in the local runtime
            await session.delete("out/secret")
        # The escaping link itself is the agent's to delete; its target stays.
        await session.delete("leak")
        await session.delete("out")
        assert not (root / "leak").is_symlink()
        assert not (root / "out").is_symlink()
        assert (tmp_path / "secret").read_text() == "s"
        inside = await session.write("ok", chunks(b"o"), 10)
        assert inside == 1


async def test_export_is_a_gzip_tar_of_the_root(tmp_path: Path) -> None:
    import io
    import tarfile

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_bytes(b"hello")
    (tmp_path / "big").write_bytes(os.urandom(12 * 1024 * 1024))  # more than one window
    async with agent(tmp_path) as session:
        data = b"".join([chunk async for chunk in session.export_tar()])
        again = await session.exec(spec("echo still-alive"), 1 << 20)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        names = sorted(archive.getnames())
        member = archive.extractfile("d/f.txt")
        assert member is not None
        assert member.read() == b"hello"
    assert names == ["big", "d", "d/f.txt"]
    assert again.stdout == b"still-alive\n"


def _tarball(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    """A gzip tar holding ``symlinks`` first, then ``members``."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def test_restore_swaps_in_a_checked_tarball(tmp_path: Path) -> None:
    from trove_api.runtimes.channel.restore import AgentRestore, restore

    (tmp_path / "old.txt").write_text("old")
    async with agent(tmp_path) as session:
        count = await restore(AgentRestore(session), chunks(_tarball({"new/a.txt": b"A", "b.txt": b"B"})))
    assert count == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt", "new"]
    assert (tmp_path / "new" / "a.txt").read_bytes() == b"A"


async def test_restore_refuses_unsafe_members_and_keeps_the_tree(tmp_path: Path) -> None:
    from trove_api.runtimes.channel.restore import AgentRestore, restore
    from trove_core.errors import SnapshotCorruptError

    (tmp_path / "keep.txt").write_text("keep")
    bad = _tarball({"link/x": b"through"}, symlinks={"link": "/etc"})
    evil = _tarball({"../escape": b"x"})
    async with agent(tmp_path) as session:
        for archive in (evil, bad, b"not a tarball at all" * 100):
            with pytest.raises(SnapshotCorruptError):
                await restore(AgentRestore(session), chunks(archive))
        alive = await session.exec(spec("ls -A /dev/null"), 1 << 20)
    assert alive.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


async def test_special_files_are_refused_without_waiting(tmp_path: Path, fds: bool) -> None:
    os.mkfifo(tmp_path / "pipe")
    async with agent(tmp_path, fds=fds) as session:
        with pytest.raises(IsADirectoryError_):
            await asyncio.wait_for(session.open_file("pipe"), 5)


async def test_background_jobs_do_not_hold_the_call(tmp_path: Path) -> None:
    # Repeated: a shell that exits at once may be reaped before the agent looks at it (a race
    # that once let the background job's open pipes hold the call until its timeout).
    async with agent(tmp_path) as session:
        for _ in range(15):
            out = await session.exec(spec("sleep 100 & echo started", timeout=5), 1 << 20)
            assert (out.stdout, out.timed_out, out.exit_code) == (b"started\n", False, 0)
