"""Snapshots without trove-agent: the fallback script's ``export`` and ``import`` in fresh execs.

The same archive and the same guarantee as the agent's: ``export`` streams a gzip tar of the
root's entries; ``import`` extracts beside the tree and swaps it in only after "end", which the
API sends once the whole stream has passed its own member check (``channel.restore.restore``). A
refusal, a dropped stream or a tar error leaves the namespace as it was.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

from trove_api.runtimes.channel.protocol import FRAME_BYTES
from trove_api.runtimes.kubernetes.fallback.files import START_TIMEOUT_S, PodFiles, Shell
from trove_core.errors import TroveError


async def export_tar(files: PodFiles) -> AsyncIterator[bytes]:
    shell = await files.run("export")
    try:
        async for chunk in shell.chunks():
            yield chunk
        if shell.exit_code != 0:
            raise shell.error("")
    finally:
        await shell.close()


class ShellRestore:
    """A ``channel.restore.RestoreTarget``: the checked stream, framed into the script's stdin."""

    def __init__(self, files: PodFiles) -> None:
        self.files = files
        self._shell: Shell | None = None
        self._pending = bytearray()

    @property
    def shell(self) -> Shell:
        assert self._shell is not None, "begin() first"
        return self._shell

    async def begin(self) -> None:
        self._shell = await self.files.run("import", secrets.token_hex(6))
        async with asyncio.timeout(START_TIMEOUT_S):
            ready = await self._shell.line()
        if ready != b"ready":
            await self._shell.finish()
            raise self._shell.error("")

    @property
    def stopped(self) -> bool:
        return self.shell.done

    async def failure(self) -> TroveError:
        await self.shell.finish()
        return self.shell.error("")

    async def send(self, chunk: bytes) -> None:
        # Batched: the script spends one `head` process per frame.
        self._pending += chunk
        if len(self._pending) >= FRAME_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        if self._pending:
            await self.shell.send_frame(self._pending)
            self._pending.clear()

    async def commit(self) -> None:
        await self._flush()
        await self.shell.send(b"end\n")
        if await self.shell.finish() != 0:
            raise self.shell.error("")

    async def abort(self) -> None:
        await self.shell.abort()  # the script then removes its staging

    async def close(self) -> None:
        if self._shell is not None:
            await self._shell.close()
