"""Starting a namespace's sandbox: the spawn chain around trove-agent, and what it holds while it runs.

Sandboxed: ``sh`` (join the namespace's cgroups, rlimits, open the seccomp filter) → ``nsenter``
into the namespace's network namespace → ``setpriv`` to its uid → ``bwrap`` → ``python3 -I -S
/run/trove/agent.py /workspace``. The agent is long-lived, so the limits on it are the ones that
hold for the sandbox as a whole (processes; address space without a memory cgroup): CPU seconds
and file size are set by the agent on each command's shell, as RLIMIT_CPU on the agent would add
up over every call. Unsandboxed (development only) the agent runs as the server's user with the
namespace directory as its root, and commands run in a directory that shows it as ``workspace/``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from trove_api.runtimes.channel import AGENT_SOURCE
from trove_api.runtimes.local import netns
from trove_api.runtimes.local.agent_sandbox import AgentSandbox
from trove_api.runtimes.local.cgroups import Cgroups
from trove_api.runtimes.local.sandbox import (
    SANDBOX_ROOT,
    Limits,
    build_bwrap_argv,
    build_drop_privileges,
    build_enter_netns,
    build_limits_wrapper,
)

# bwrap reads the seccomp filter and the agent from these fds, which the limits wrapper opens
# per sandbox (as the server's user: no sandbox uid needs to reach the source tree).
SECCOMP_FD = 3
AGENT_FD = 4
AGENT_IN_SANDBOX = "/run/trove/agent.py"
# Isolated, and no site module: the agent is standard library only, and the .pth files of the
# system's site-packages (e.g. one importing ssl and certifi) cost start-up time and memory.
AGENT_FLAGS = ("-I", "-S")


class SandboxLauncher:
    def __init__(
        self,
        base: Path,
        *,
        sandbox: bool,
        limits: Limits,
        cgroups: Cgroups,
        networks: netns.SandboxNetworks | None,
        seccomp_path: Path | None,
    ) -> None:
        self.sandbox = sandbox
        # What the agent process itself is held to (see the module docstring).
        self.limits = Limits(None, None, limits.processes, limits.address_space_bytes)
        self.cgroups = cgroups
        self.networks = networks
        self.seccomp_path = seccomp_path

    def argv(
        self, directory: str, uid: int | None, cgroup_procs: Sequence[str], netns_path: str | None
    ) -> list[str]:
        seccomp_path = self.seccomp_path
        inputs = [(SECCOMP_FD, str(seccomp_path))] if seccomp_path else []
        inputs.append((AGENT_FD, str(AGENT_SOURCE)))
        return (
            build_limits_wrapper(cgroup_procs, self.limits, inputs)
            + build_enter_netns(netns_path)
            + build_drop_privileges(uid)
            + build_bwrap_argv(
                directory,
                own_netns=netns_path is not None,
                seccomp_fd=SECCOMP_FD if seccomp_path else None,
                data_files=[(AGENT_FD, AGENT_IN_SANDBOX)],
            )
            + ["python3", *AGENT_FLAGS, AGENT_IN_SANDBOX, SANDBOX_ROOT]
        )

    async def start(self, key: str, directory: Path, uid: int | None, view: Path) -> AgentSandbox:
        """Start the sandbox of namespace ``key`` (its directory, already provisioned and mounted)."""
        path = os.environ.get("PATH", "/usr/bin:/bin")
        if not self.sandbox:
            _ensure_view(view, directory)
            agent = [sys.executable, *AGENT_FLAGS, str(AGENT_SOURCE), str(directory), str(view)]
            argv = [*build_limits_wrapper([], self.limits), *agent]
            return await AgentSandbox.start(key, argv, env={"PATH": path}, cwd=view, contained=False)
        cgroup_procs = await asyncio.to_thread(self.cgroups.prepare, key)
        networks = self.networks
        netns_path = await asyncio.to_thread(networks.acquire, key) if networks else None

        def release() -> None:
            if networks is not None and netns_path is not None:
                networks.release(key)

        def network_up() -> bool:
            # A slirp4netns that died takes tap0 with it; the network is rebuilt only for a new
            # sandbox (this one stays in the old namespace), so the next call starts one.
            return networks is None or netns_path is None or networks.slirp_running(key)

        argv = self.argv(str(directory), uid, cgroup_procs, netns_path)
        return await AgentSandbox.start(key, argv, env={"PATH": path}, on_stop=release, healthy=network_up)


def _ensure_view(view: Path, target: Path) -> None:
    view.mkdir(mode=0o700, exist_ok=True)
    link = view / "workspace"
    if not link.is_symlink():
        link.symlink_to(target)
