"""Snapshot restores on Kubernetes: check the tarball on the API side while it streams into the pod.

The pod extracts with GNU tar beside the workspace and swaps only after the API has read the
whole stream and every member passed ``trove_core.archive`` (the local runtime's rules), so a
bad or hostile snapshot is refused with ``SnapshotCorruptError`` and leaves the namespace as
it was. Inside its own pod, tar runs as the sandbox user and can reach nothing the agent's own
shell could not; the check exists so both runtimes accept and refuse the same snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import tarfile
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from trove_api.runtimes.channel.protocol import CANCEL, EOF, Request, agent_error
from trove_api.runtimes.channel.session import AgentSession
from trove_api.runtimes.threadfeed import ThreadFedReader
from trove_core.archive import MemberChecker, UnsafeMemberError
from trove_core.errors import SnapshotCorruptError, TroveError

_DEPTH = 4


def _check(reader: ThreadFedReader, check_space: Callable[[int], None] | None = None) -> int:
    """Walk the stream's members with the shared checker; the regular files it would restore.

    ``check_space`` is asked before each file with its size (the local data dir's reserve: the
    compressed stream says nothing of what extracting it takes) and may raise to refuse."""
    checker = MemberChecker()
    count = 0
    try:
        with tarfile.open(fileobj=reader, mode="r|gz") as tar:  # type: ignore[call-overload]
            for member in tar:
                plan = checker.check(member)
                if plan is not None and plan.kind in ("file", "hardlink"):
                    count += 1
                    if check_space is not None:
                        check_space(member.size)
        # Drain whatever follows the end-of-archive blocks, so the feeder never blocks.
        while reader.read(1 << 16):
            pass
    except UnsafeMemberError as exc:
        raise SnapshotCorruptError(f"Snapshot refused: unsafe member {exc}") from exc
    except (tarfile.TarError, zlib.error, EOFError) as exc:
        raise SnapshotCorruptError(f"Snapshot refused: not a valid gzip tar ({exc})") from exc
    return count


class RestoreTarget(Protocol):
    """Where a checked stream is extracted: trove-agent's import, or the fallback script's."""

    async def begin(self) -> None: ...

    async def send(self, chunk: bytes) -> None: ...

    @property
    def stopped(self) -> bool:
        """The pod answered before the end: an extraction error (``failure`` tells which)."""
        ...

    async def failure(self) -> TroveError: ...

    async def commit(self) -> None:
        """End of a checked stream: the pod swaps it in, or raises what went wrong."""
        ...

    async def abort(self) -> None:
        """Stop; the pod drops what it extracted and the namespace stays as it was."""
        ...

    async def close(self) -> None: ...


class AgentRestore:
    """A ``RestoreTarget`` on trove-agent's warm channel (``op: import``)."""

    def __init__(self, session: AgentSession) -> None:
        self.session = session
        self._request: Request | None = None

    @property
    def request(self) -> Request:
        assert self._request is not None, "begin() first"
        return self._request

    async def begin(self) -> None:
        self._request = await self.session.open({"op": "import"})

    async def send(self, chunk: bytes) -> None:
        await self.request.send_data(chunk)

    @property
    def stopped(self) -> bool:
        return not self.request.queue.empty()

    async def failure(self) -> TroveError:
        result = await self.request.result()
        return agent_error(result) if not result.get("ok") else TroveError("restore ended early")

    async def commit(self) -> None:
        await self.request.send(EOF)
        result = await self.request.result()
        if not result.get("ok"):
            raise agent_error(result)

    async def abort(self) -> None:
        request = self._request
        if request is not None and not self.session.closed and request.id in self.session.requests:
            with contextlib.suppress(TroveError, OSError):
                await request.send(CANCEL)
                await request.result()

    async def close(self) -> None:
        if self._request is not None:
            self._request.close()


async def restore(
    target: RestoreTarget, chunks: AsyncIterator[bytes], check_space: Callable[[int], None] | None = None
) -> int:
    """Stream ``chunks`` into ``target`` while checking them; commit only a whole, clean stream."""
    try:
        await target.begin()
    except BaseException:
        await target.close()
        raise
    reader = ThreadFedReader(_DEPTH)
    checker = asyncio.get_running_loop().run_in_executor(None, _check, reader, check_space)
    # A checker that stopped (a refusal) must not leave the feeder waiting for room.
    checker.add_done_callback(lambda _: reader.worker_stopped())
    committed = False
    try:
        async for chunk in chunks:
            if checker.done():
                checker.result()  # a refusal surfaces now; a clean end ignores trailing bytes
                continue
            await reader.put(chunk)
            await target.send(chunk)
            if target.stopped:
                break  # the pod answered early: an extraction error
        reader.end()
        count = await checker
        if target.stopped:
            raise await target.failure()
        committed = True  # from here the pod's answer is final; nothing to cancel
        await target.commit()
        return count
    except BaseException:
        if not checker.done():
            reader.abort()
        if not committed:
            await target.abort()
        with contextlib.suppress(BaseException):
            await checker
        raise
    finally:
        await target.close()
