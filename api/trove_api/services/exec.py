"""Exec policy: the init.sh prelude, timeout and output caps, path rewriting, exec.completed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from trove_api.events import types
from trove_api.services import intents as kinds
from trove_api.services.auth import Caller
from trove_api.services.events import EventEmitter
from trove_api.services.intents import IntentLog
from trove_api.services.namespace_locks import NamespaceLocks
from trove_api.services.namespaces import NamespaceService
from trove_core.errors import ExecTimeoutError
from trove_core.runtime import ExecOutput, ExecSpec, Runtime
from trove_core.wire import MIB

# Sourced in the same shell as the command so cd/export/functions/venvs carry over. It sits on
# its own line so a syntax error in the user's command cannot stop it, and an error inside it
# only prints to stderr (the command still runs).
INIT_PRELUDE = "if [ -f workspace/.trove/init.sh ]; then . workspace/.trove/init.sh; fi\n"
EVENT_PREVIEW_BYTES = 4096


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str
    duration_ms: int
    truncated: bool


def build_script(command: str) -> str:
    return INIT_PRELUDE + command


def truncation_note(limit: int) -> str:
    size = f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit} bytes"
    return f"[output truncated at {size}]"


def rewrite_paths(text: str, aliases: Sequence[str]) -> str:
    """Replace internal absolute paths of the namespace root with ``workspace``."""
    for alias in sorted({a.rstrip("/") for a in aliases if a}, key=len, reverse=True):
        text = re.sub(re.escape(alias) + r"(?=/|$|[^\w.-])", "workspace", text)
    return text


class ExecService:
    def __init__(
        self,
        runtime: Runtime,
        namespaces: NamespaceService,
        emitter: EventEmitter,
        *,
        timeout_s: float,
        output_limit: int,
        locks: NamespaceLocks,
        intents: IntentLog,
    ) -> None:
        self.runtime = runtime
        self.namespaces = namespaces
        self.emitter = emitter
        self.intents = intents
        # Shared with other execs and writes; a snapshot restore takes it exclusively.
        self.locks = locks
        self.timeout_s = timeout_s
        self.output_limit = output_limit

    async def run(self, caller: Caller, namespace: str, command: str, stdin: str | None) -> ExecResult:
        ns = await self.namespaces.ensure(caller.workspace_id, namespace, caller.actor)
        spec = ExecSpec(
            script=build_script(command),
            stdin=stdin.encode("utf-8", "surrogatepass") if stdin is not None else None,
            timeout_s=self.timeout_s,
            output_limit=self.output_limit,
        )
        # What recovery emits if this process dies mid-command (services.recovery says why).
        interrupted = {
            "command": _preview(command),
            "exit_code": None,
            "duration_ms": None,
            "stdout": "",
            "stderr": "",
            "timed_out": False,
            "truncated": False,
        }
        async with self.locks.shared(caller.workspace_id, namespace):
            intent = await self.intents.begin(
                caller.workspace_id, namespace, kinds.EXEC, caller.actor, {"data": interrupted}
            )
            async with self.intents.around(intent):
                output = await self.runtime.exec(ns, spec)
        result = self._render(output, self.runtime.path_aliases(ns))
        await self.intents.complete(
            intent,
            types.EXEC_COMPLETED,
            {
                "command": _preview(command),
                "exit_code": None if output.timed_out else result.exit_code,
                "duration_ms": result.duration_ms,
                "stdout": _preview(result.stdout),
                "stderr": _preview(result.stderr),
                "timed_out": output.timed_out,
                "truncated": result.truncated,
            },
        )
        if output.timed_out:
            raise ExecTimeoutError(
                f"Command timed out after {self.timeout_s:g}s.",
                extra={
                    "stdout": result.stdout,
                    "stderr": result.stderr,
                    "duration_ms": result.duration_ms,
                    "timed_out": True,
                    "truncated": result.truncated,
                },
            )
        return result

    def _render(self, output: ExecOutput, aliases: Sequence[str]) -> ExecResult:
        note = truncation_note(self.output_limit)
        streams = []
        for data, cut in (
            (output.stdout, output.stdout_truncated),
            (output.stderr, output.stderr_truncated),
        ):
            text = rewrite_paths(data.decode("utf-8", "replace"), aliases)
            if cut:
                text += ("" if text.endswith("\n") or not text else "\n") + note + "\n"
            streams.append(text)
        return ExecResult(
            exit_code=output.exit_code,
            stdout=streams[0],
            stderr=streams[1],
            duration_ms=output.duration_ms,
            truncated=output.stdout_truncated or output.stderr_truncated,
        )


def legacy_text(result: ExecResult) -> str:
    """The legacy ``/exec`` body: stdout, or ``[exit N]`` + stdout + stderr (WIRE.md A9)."""
    if result.exit_code == 0:
        return result.stdout
    return f"[exit {result.exit_code}]\n{result.stdout}{result.stderr}"


def _preview(text: str) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= EVENT_PREVIEW_BYTES:
        return text
    return data[:EVENT_PREVIEW_BYTES].decode("utf-8", "ignore") + "…"
