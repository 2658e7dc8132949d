"""Pure builders for the command line that runs one exec: resource limits, uid drop, bubblewrap.

The chain is ``sh -c <join cgroups; set rlimits; exec "$@" 3<filter> [nsenter --net=…] setpriv …
bwrap … bash -c <script>``. Each link ``exec``s the next, so the process the server spawned *is*
bubblewrap by the time the script runs, and killing it (``--die-with-parent``, a pid namespace)
kills everything inside. The uid drop happens *before* bubblewrap: bwrap run as root with
``--uid`` would still touch files as host root (PLATFORM.md). Entering the prepared network
namespace also needs root, so ``nsenter`` comes before the drop; bubblewrap then unshares every
other namespace itself.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

SANDBOX_ROOT = "/workspace"
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Limits:
    # None: not set on this process (the long-lived agent sets them on each command instead).
    cpu_seconds: int | None
    file_bytes: int | None
    processes: int
    # Only used when no memory cgroup is available: then it caps each process's address space.
    address_space_bytes: int | None


def build_limits_wrapper(
    cgroup_procs: Sequence[str], limits: Limits, inputs: Sequence[tuple[int, str]] = ()
) -> list[str]:
    """``sh -c`` that joins the namespace's cgroups, sets rlimits, then execs its arguments.

    ``inputs`` are files opened read-only on the given fds for the exec'd command (the seccomp
    filter bwrap reads): opened afresh per exec, since a shared fd's offset would be at EOF after
    the first reader.
    """
    steps = [f"echo $$ > {shlex.quote(path)}" for path in cgroup_procs]
    ulimits = [f"-p {limits.processes}"]
    if limits.cpu_seconds is not None:
        ulimits.append(f"-t {limits.cpu_seconds}")
    if limits.file_bytes is not None:
        # dash counts -f in 512-byte blocks.
        ulimits.append(f"-f {max(1, limits.file_bytes // 512)}")
    if limits.address_space_bytes is not None:
        ulimits.append(f"-v {limits.address_space_bytes // 1024}")
    # dash's ulimit takes one limit per call.
    steps += [f"ulimit {flag}" for flag in ulimits]
    redirects = "".join(f" {fd}<{shlex.quote(path)}" for fd, path in inputs)
    script = " && ".join(steps) + f' || exit 125; exec "$@"{redirects}'
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


def build_enter_netns(netns_path: str | None) -> list[str]:
    if netns_path is None:
        return []
    return ["nsenter", f"--net={netns_path}", "--"]


def build_bwrap_argv(
    namespace_root: str,
    *,
    own_netns: bool,
    seccomp_fd: int | None = None,
    ro_binds: Sequence[str] = ("/usr", "/etc"),
    data_files: Sequence[tuple[int, str]] = (),
    symlinks: Sequence[tuple[str, str]] = (
        ("usr/bin", "/bin"),
        ("usr/lib", "/lib"),
        ("usr/lib64", "/lib64"),
        ("usr/sbin", "/sbin"),
    ),
) -> list[str]:
    """bubblewrap showing only the namespace (at /workspace) and read-only system dirs.

    ``own_netns``: bwrap starts inside a network namespace prepared for this sandbox and stays
    in it; otherwise it makes an empty one (loopback only). ``data_files`` are (fd, path inside):
    the file open on fd, copied to a read-only file there (the agent at ``/run/trove/agent.py``;
    a copy, so no host path shows in the sandbox's mount table). ``--disable-userns`` stops the
    command from creating user namespaces of its own (the kernel's userns attack surface).
    """
    argv = [
        "bwrap", "--unshare-user", "--disable-userns", "--unshare-ipc", "--unshare-pid",
        "--unshare-uts", "--unshare-cgroup-try",
    ]  # fmt: skip
    if not own_netns:
        argv.append("--unshare-net")
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
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
        *[arg for fd, target in data_files for arg in ("--ro-bind-data", str(fd), target)],
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
