"""The local runtime at start-up: where namespaces live, and whether a real sandbox can run here."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from trove_api.runtimes.local.agent_sandbox import AgentSandbox
from trove_core.errors import SandboxUnavailableError, UnavailableError

if TYPE_CHECKING:
    from trove_api.runtimes.local.runtime import LocalRuntime

log = logging.getLogger(__name__)


def startup_report(runtime: LocalRuntime) -> list[str]:
    """Check that a sandbox starts and its agent answers; the warnings to print. Raises if not."""
    warnings = runtime.volumes.check()
    if not runtime.sandbox:
        warnings.append(
            "TROVE_SANDBOX=none: commands run UNSANDBOXED as the server's own user, with "
            "full access to everything it can touch. Use this only for development."
        )
        return warnings
    if shutil.which("bwrap") is None:
        raise SandboxUnavailableError(
            "bubblewrap (bwrap) is not installed. Install it (apt-get install bubblewrap) "
            "or set TROVE_SANDBOX=none to run commands unsandboxed (development only)."
        )
    # Its own loop in its own thread: the caller may or may not be running one.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="trove-probe") as pool:
        said = pool.submit(asyncio.run, _probe(runtime)).result()
    if said is not None and "Permission denied" in said and runtime.as_root:
        raise SandboxUnavailableError(
            f"sandbox uids cannot reach {runtime.root}: every parent directory of "
            "TROVE_DATA_DIR must be traversable by other users (chmod o+x), or choose "
            f"a data dir elsewhere (e.g. under /var/lib or /srv). The sandbox said: {said}"
        )
    if said is not None:
        raise SandboxUnavailableError(
            f"bubblewrap cannot create a sandbox here: {said}. Enable unprivileged user "
            "namespaces, or set TROVE_SANDBOX=none (development only)."
        )
    if not runtime.as_root:
        warnings.append(
            "Running as non-root: commands are sandboxed, but every namespace runs as this "
            f"server's uid ({os.geteuid()}), so a sandbox escape would reach the others."
        )
    if runtime.seccomp_path is None:
        warnings.append("TROVE_SANDBOX_SECCOMP=off: sandboxes run without a syscall filter.")
    warnings += _network_report(runtime)
    if runtime.cgroups.mode == "none":
        warnings.append(
            "No writable cgroup hierarchy: memory and process limits fall back to per-process rlimits."
        )
    return warnings


async def _probe(runtime: LocalRuntime) -> str | None:
    """Start a sandbox (the real chain, without cgroups and network) on an empty directory and
    ping its agent: None if it answered, else what went wrong."""
    probe = runtime.root / f".probe-{secrets.token_hex(4)}"
    probe.mkdir(mode=0o700)
    uid = runtime.uid_base if runtime.as_root else None
    try:
        if uid is not None:
            os.chown(probe, uid, uid)
        argv = runtime.launcher.argv(str(probe), uid, [], None)
        try:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            sandbox = await AgentSandbox.start(probe.name, argv, env=env)
        except UnavailableError as exc:
            return exc.internal or exc.detail
        try:
            await sandbox.session.call({"op": "ping"})
        except Exception as exc:  # anything but an answer means no sandbox
            return f"its agent did not answer a ping ({exc})"
        finally:
            await sandbox.stop()
        return None
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _network_report(runtime: LocalRuntime) -> list[str]:
    if runtime.network_unavailable:
        return [
            f"TROVE_SANDBOX_NETWORK=outbound, but {runtime.network_unavailable}: sandboxes get NO "
            "network at all (as with `off`), never the host's."
        ]
    if runtime.networks is not None and not runtime.networks.startup_check():
        return [
            "slirp4netns could not give a sandbox a network (see the log above): execs "
            "run without network until it can."
        ]
    return []


def _traversable_by_others(path: Path) -> bool:
    for directory in [path, *path.parents]:
        if directory.exists() and not os.stat(directory).st_mode & stat.S_IXOTH:
            return False
    return True


def sandbox_base(data_dir: Path, needs_traversal: bool) -> Path:
    """Where namespace directories live: the data dir, unless sandbox uids cannot reach it.

    Sandboxes run as unprivileged uids and bubblewrap binds the namespace directory by path,
    so every parent must be traversable (o+x). A data dir under a private home (``/root`` is
    0700) is not; then the namespaces live under /var/lib/trove, linked from the data dir.
    """
    if not needs_traversal or _traversable_by_others(data_dir):
        return data_dir
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    base = Path("/var/lib/trove/sandboxes") / digest
    base.mkdir(parents=True, exist_ok=True)
    for parent in (Path("/var/lib/trove"), Path("/var/lib/trove/sandboxes")):
        os.chmod(parent, 0o711)
    link = data_dir / "namespaces"
    if not link.is_symlink() and not link.exists():
        link.symlink_to(base / "namespaces")
    log.warning(
        "%s is not reachable by sandbox uids (a parent lacks o+x); namespace directories live in %s instead",
        data_dir,
        base,
    )
    return base
