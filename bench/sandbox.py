"""The raw baseline for execs: one fresh sandbox per command (what the local runtime spawned per
exec before sandboxes stayed warm), built by the runtime's own builders and settings."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import ServerProcess
from trove_api.runtimes.local.launch import SECCOMP_FD
from trove_api.runtimes.local.runtime import LocalRuntime, _sandbox_key
from trove_api.runtimes.local.sandbox import (
    build_bwrap_argv,
    build_drop_privileges,
    build_limits_wrapper,
    build_shell,
)
from trove_api.services.exec import build_script
from trove_core.runtime import NamespaceRef
from trove_core.settings import load_settings


@dataclass(frozen=True)
class RawSandbox:
    argv: list[str]
    env: dict[str, str]
    directory: Path
    uid: int | None
    pids_current: list[Path]

    def run_sync(self) -> float:
        """Spawn the sandbox once (output captured, like the server does); seconds taken."""
        started = time.perf_counter()
        done = subprocess.run(
            self.argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=self.env,
            start_new_session=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(
                f"raw sandbox exited {done.returncode}: {done.stderr.decode(errors='replace')}"
            )
        return elapsed

    def settle(self, timeout_s: float = 5.0) -> None:
        """Wait until the namespace's sandboxes from earlier runs are gone (their pids are freed).

        50 sandboxes hold ~150 of the namespace's process slots and die asynchronously, so a
        round started at once after another can find the cap full.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = [int(p.read_text()) for p in self.pids_current if p.exists()]
            if not any(counts):
                return
            time.sleep(0.01)

    async def run_async(self) -> float:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )
        _out, err = await proc.communicate()
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"raw sandbox exited {proc.returncode}: {err.decode(errors='replace')}")
        return elapsed


def raw_sandbox(server: ServerProcess, namespace: str, command: str) -> RawSandbox:
    """The sandbox the server would spawn for ``command`` in ``namespace`` (which must exist).

    The runtime is built from the same settings as the server (same TROVE_* environment, same
    data dir), so limits, network and the namespace directory match. Constructing it sweeps
    the staging directory: call this only while no upload is in flight on ``server``.
    """
    settings = load_settings(data_dir=server.data_dir)
    runtime = LocalRuntime.from_settings(settings)
    if not runtime.sandbox:
        raise RuntimeError("TROVE_SANDBOX=none: there is no sandbox to compare against")
    probe = NamespaceRef(server.workspace_id, namespace)
    directory = runtime._dir(probe)
    if not directory.is_dir():
        raise RuntimeError(f"namespace {namespace!r} has not been provisioned yet ({directory})")
    # The server chowns the namespace directory to the namespace's uid (uid_base + its number).
    ref = NamespaceRef(server.workspace_id, namespace, directory.stat().st_uid)
    cgroup_procs = runtime.cgroups.prepare(_sandbox_key(ref))
    seccomp = runtime.seccomp_path
    argv = (
        build_limits_wrapper(cgroup_procs, runtime.limits, [(SECCOMP_FD, str(seccomp))] if seccomp else [])
        + build_drop_privileges(runtime._uid(ref))
        + build_bwrap_argv(str(directory), own_netns=False, seccomp_fd=SECCOMP_FD if seccomp else None)
        + build_shell(build_script(command))
    )
    # The same environment the server hands the sandbox chain.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    pids_current = [Path(procs).parent / "pids.current" for procs in cgroup_procs]
    return RawSandbox(argv, env, directory, runtime._uid(ref), [p for p in pids_current if p.exists()])
