"""Pure builders for the command line that runs one exec: resource limits, uid drop, bubblewrap.

The chain is ``sh -c <join cgroups; set rlimits; exec "$@"> setpriv … bwrap … bash -c <script>``.
Each link ``exec``s the next, so the process the server spawned *is* bubblewrap by the time the
script runs, and killing it (``--die-with-parent``, a pid namespace) kills everything inside.
The uid drop happens *before* bubblewrap: bwrap run as root with ``--uid`` would still touch
files as host root (PLATFORM.md).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

SANDBOX_ROOT = "/workspace"
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    file_bytes: int
    processes: int
    # Only used when no memory cgroup is available: then it caps each process's address space.
    address_space_bytes: int | None


def build_limits_wrapper(cgroup_procs: Sequence[str], limits: Limits) -> list[str]:
    """``sh -c`` that joins the namespace's cgroups, sets rlimits, then execs its arguments."""
    steps = [f"echo $$ > {shlex.quote(path)}" for path in cgroup_procs]
    ulimits = [
        f"-t {limits.cpu_seconds}",
        # dash counts -f in 512-byte blocks.
        f"-f {max(1, limits.file_bytes // 512)}",
        f"-p {limits.processes}",
    ]
    if limits.address_space_bytes is not None:
        ulimits.append(f"-v {limits.address_space_bytes // 1024}")
    # dash's ulimit takes one limit per call.
    steps += [f"ulimit {flag}" for flag in ulimits]
    script = " && ".join(steps) + ' || exit 125; exec "$@"'
    return ["/bin/sh", "-c", script, "trove-limits"]


def build_drop_privileges(uid: int | None) -> list[str]:
    if uid is None:
        return []
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
    ]


def build_bwrap_argv(
    namespace_root: str,
    *,
    network: bool,
    ro_binds: Sequence[str] = ("/usr", "/etc"),
    symlinks: Sequence[tuple[str, str]] = (
        ("usr/bin", "/bin"),
        ("usr/lib", "/lib"),
        ("usr/lib64", "/lib64"),
        ("usr/sbin", "/sbin"),
    ),
) -> list[str]:
    """bubblewrap showing only the namespace (at /workspace) and read-only system dirs."""
    argv = ["bwrap", "--unshare-all"]
    if network:
        argv.append("--share-net")
    argv += ["--die-with-parent", "--new-session"]
    for path in ro_binds:
        argv += ["--ro-bind", path, path]
    for target, link in symlinks:
        argv += ["--symlink", target, link]
    argv += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",
        "--tmpfs", "/run",
        "--bind", namespace_root, SANDBOX_ROOT,
        "--chdir", "/",
        "--clearenv",
        "--setenv", "HOME", SANDBOX_ROOT,
        "--setenv", "PATH", SANDBOX_PATH,
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "TERM", "dumb",
        "--setenv", "USER", "agent",
        "--",
    ]  # fmt: skip
    return argv


def build_shell(script: str) -> list[str]:
    return ["/bin/bash", "--noprofile", "--norc", "-c", script]
