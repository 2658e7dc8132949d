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
from collections.abc import AsyncIterator

from trove_api.runtimes.kubernetes.channel import CANCEL, EOF, AgentSession, agent_error
from trove_api.runtimes.threadfeed import ThreadFedReader
from trove_core.archive import MemberChecker, UnsafeMemberError
from trove_core.errors import SnapshotCorruptError, TroveError

_DEPTH = 4


def _check(reader: ThreadFedReader) -> int:
    """Walk the stream's members with the shared checker; the regular files it would restore."""
    checker = MemberChecker()
    count = 0
    try:
        with tarfile.open(fileobj=reader, mode="r|gz") as tar:  # type: ignore[call-overload]
            for member in tar:
                plan = checker.check(member)
                if plan is not None and plan.kind in ("file", "hardlink"):
                    count += 1
        # Drain whatever follows the end-of-archive blocks, so the feeder never blocks.
        while reader.read(1 << 16):
            pass
    except UnsafeMemberError as exc:
        raise SnapshotCorruptError(f"Snapshot refused: unsafe member {exc}") from exc
    except (tarfile.TarError, zlib.error, EOFError) as exc:
        raise SnapshotCorruptError(f"Snapshot refused: not a valid gzip tar ({exc})") from exc
    return count


async def restore(session: AgentSession, chunks: AsyncIterator[bytes]) -> int:
    request = await session.open({"op": "import"})
    reader = ThreadFedReader(_DEPTH)
    checker = asyncio.get_running_loop().run_in_executor(None, _check, reader)
    # A checker that stopped (a refusal) must not leave the feeder waiting for room.
    checker.add_done_callback(lambda _: reader.worker_stopped())
    done = False
    try:
        async for chunk in chunks:
            if checker.done():
                checker.result()  # a refusal surfaces now; a clean end ignores trailing bytes
                continue
            await reader.put(chunk)
            await request.send_data(chunk)
            if not request.queue.empty():
                break  # the pod answered early: an extraction error
        reader.end()
        count = await checker
        if not request.queue.empty():
            result = await request.result()
            raise agent_error(result) if not result.get("ok") else TroveError("restore ended early")
        await request.send(EOF)
        result = await request.result()
        done = True
        if not result.get("ok"):
            raise agent_error(result)
        return count
    except BaseException:
        if not checker.done():
            reader.abort()
        if not done and not session.closed and request.id in session.requests:
            with contextlib.suppress(TroveError, OSError):
                await request.send(CANCEL)
                await request.result()
        with contextlib.suppress(BaseException):
            await checker
        raise
    finally:
        request.close()
