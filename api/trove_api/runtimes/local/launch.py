"""Starting a namespace's sandbox: the spawn chain around trove-agent, and what it holds while it runs.

Sandboxed: ``sh`` (join the namespace's cgroups, rlimits, open the seccomp filter) → ``nsenter``
into the namespace's network namespace → ``setpriv`` to its uid → ``bwrap`` → ``python3 -I -S
/run/trove/agent.pyc /workspace`` (the agent's bytecode, compiled once per server by that same
python3; its source ``agent.py`` if that failed). The agent is long-lived, so the limits on it
are the ones that hold for the sandbox as a whole (processes; address space without a memory
cgroup): CPU seconds and file size are set by the agent on each command's shell, as RLIMIT_CPU on
the agent would add up over every call. Unsandboxed (development only) the agent runs as the
server's user with the namespace directory as its root, and commands run in a directory that
shows it as ``workspace/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from trove_api.runtimes.channel import AGENT_SOURCE
from trove_api.runtimes.local import netbuild, netns
from trove_api.runtimes.local.agent_sandbox import AgentSandbox
from trove_api.runtimes.local.cgroups import Cgroups
from trove_api.runtimes.local.sandbox import (
    SANDBOX_PATH,
    SANDBOX_ROOT,
    Limits,
    build_bwrap_argv,
    build_drop_privileges,
    build_enter_netns,
    build_limits_wrapper,
)

log = logging.getLogger(__name__)

# bwrap reads the seccomp filter and the agent from these fds, which the limits wrapper opens
# per sandbox (as the server's user: no sandbox uid needs to reach the source tree).
SECCOMP_FD = 3
AGENT_FD = 4
# A sandbox with a network of its own resolves through slirp's forwarder: the host's resolv.conf
# names a resolver the sandbox's routes refuse (a private or loopback address, most often).
RESOLV_FD = 5
RESOLV_CONF = f"nameserver {netbuild.SLIRP_DNS}\n"
AGENT_IN_SANDBOX = "/run/trove/agent.py"
# The agent compiled ahead by the sandbox's own python3: compiling its source on every start
# took 20-40 ms of a new namespace's first call (more than all the imports but asyncio).
COMPILED_IN_SANDBOX = "/run/trove/agent.pyc"
_COMPILE_TIMEOUT_S = 60.0
# Isolated, and no site module: the agent is standard library only, and the .pth files of the
# system's site-packages (e.g. one importing ssl and certifi) cost start-up time and memory.
AGENT_FLAGS = ("-I", "-S")


class SandboxLauncher:
    # The agent's bytecode (``compile_agent``), or None: the source is run.
    compiled: Path | None = None
    # The sandbox's /etc/resolv.conf when it has a network of its own, or None: the host's.
    resolv_conf: Path | None = None

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
        if sandbox:
            self.compiled = compile_agent(base / "agent.pyc")
        if sandbox and networks is not None:
            self.resolv_conf = base / "resolv.conf"
            # Renamed into place: a sandbox another runtime starts meanwhile reads a whole file.
            temp = base / f".resolv.conf.{os.getpid()}.{secrets.token_hex(4)}"
            temp.write_text(RESOLV_CONF)
            os.chmod(temp, 0o644)
            os.replace(temp, self.resolv_conf)

    def argv(
        self, directory: str, uid: int | None, cgroup_procs: Sequence[str], netns_path: str | None
    ) -> list[str]:
        seccomp_path = self.seccomp_path
        inputs = [(SECCOMP_FD, str(seccomp_path))] if seccomp_path else []
        agent_file, agent_path = (
            (self.compiled, COMPILED_IN_SANDBOX) if self.compiled else (AGENT_SOURCE, AGENT_IN_SANDBOX)
        )
        inputs.append((AGENT_FD, str(agent_file)))
        data_files = [(AGENT_FD, agent_path)]
        if netns_path is not None and self.resolv_conf is not None:
            inputs.append((RESOLV_FD, str(self.resolv_conf)))
            data_files.append((RESOLV_FD, "/etc/resolv.conf"))
        return (
            build_limits_wrapper(cgroup_procs, self.limits, inputs)
            + build_enter_netns(netns_path)
            + build_drop_privileges(uid)
            + build_bwrap_argv(
                directory,
                own_netns=netns_path is not None,
                seccomp_fd=SECCOMP_FD if seccomp_path else None,
                data_files=data_files,
            )
            + ["python3", *AGENT_FLAGS, agent_path, SANDBOX_ROOT]
        )

    async def start(self, key: str, directory: Path, uid: int | None, view: Path) -> AgentSandbox:
        """Start the sandbox of namespace ``key`` (its directory, already provisioned and mounted)."""
        path = os.environ.get("PATH", "/usr/bin:/bin")
        if not self.sandbox:
            _ensure_view(view, directory)
            agent = [sys.executable, *AGENT_FLAGS, str(AGENT_SOURCE), str(directory), str(view)]
            argv = [*build_limits_wrapper([], self.limits), *agent]
            return await AgentSandbox.start(
                key, argv, env={"PATH": path}, cwd=view, contained=False, fd_device=_device(directory)
            )
        cgroup_procs = await asyncio.to_thread(self.cgroups.prepare, key)
        networks = self.networks
        netns_path = await _acquire(networks, key) if networks else None

        # A spare sandbox's key changes when a namespace claims it (``spares``).
        sandbox: AgentSandbox | None = None

        def current_key() -> str:
            return sandbox.key if sandbox is not None else key

        def release() -> None:
            if networks is not None and netns_path is not None:
                networks.release(current_key())

        def network_up() -> bool:
            # A slirp4netns that died takes tap0 with it; the network is rebuilt only for a new
            # sandbox (this one stays in the old namespace), so the next call starts one.
            return networks is None or netns_path is None or networks.slirp_running(current_key())

        argv = self.argv(str(directory), uid, cgroup_procs, netns_path)
        sandbox = await AgentSandbox.start(
            key, argv, env={"PATH": path}, on_stop=release, healthy=network_up, fd_device=_device(directory)
        )
        return sandbox


async def _acquire(networks: netns.SandboxNetworks, key: str) -> str | None:
    """``networks.acquire`` in a thread; cancelled meanwhile, the network the thread still takes
    is handed back (else it stays in use, and running, for good)."""
    acquiring = asyncio.ensure_future(asyncio.to_thread(networks.acquire, key))
    try:
        return await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # what acquire raised, nobody waits for now
            if await acquiring is not None:
                await asyncio.to_thread(networks.release, key)
        raise


def compile_agent(target: Path) -> Path | None:
    """The agent compiled to ``target`` by the python3 the sandbox runs (the same /usr, found on
    the sandbox's PATH), so its bytecode matches that interpreter; None (the source is run) if
    that fails. Written to a temp name and renamed: a sandbox starting meanwhile reads the old
    file or the new, never half of one."""
    python = shutil.which("python3", path=SANDBOX_PATH)
    if python is None:
        return None
    # Unique per call: two runtimes in one process (the server's, a maintenance one) may compile at once.
    temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
    script = (
        "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True, "
        "invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)"
    )
    try:
        subprocess.run(
            [python, "-I", "-S", "-c", script, str(AGENT_SOURCE), str(temp)],
            check=True,
            capture_output=True,
            timeout=_COMPILE_TIMEOUT_S,
        )
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not compile trove-agent with %s (%s): sandboxes run its source", python, exc)
        temp.unlink(missing_ok=True)
        return None
    return target


def _device(directory: Path) -> int:
    """The filesystem the namespace's files are on: the agent may hand over descriptors on it only."""
    return os.stat(directory).st_dev


def _ensure_view(view: Path, target: Path) -> None:
    view.mkdir(mode=0o700, exist_ok=True)
    link = view / "workspace"
    if not link.is_symlink():
        link.symlink_to(target)
