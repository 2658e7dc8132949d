"""Per-namespace cgroups (memory and process caps), v1 or v2, whichever this host lets us write.

Most user machines run cgroup v2 only; these CI machines mount v1 controllers. When neither is
writable (not root, or a read-only hierarchy) the runtime falls back to rlimits and says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

CgroupMode = Literal["v1", "v2", "none"]
_GROUP = "trove"


class Cgroups:
    def __init__(self, memory_bytes: int, max_pids: int, root: Path = Path("/sys/fs/cgroup")):
        self.memory_bytes = memory_bytes
        self.max_pids = max_pids
        self.root = root
        self.mode: CgroupMode = self._detect()
        self._prepared: dict[str, list[str]] = {}

    def _detect(self) -> CgroupMode:
        if os.geteuid() != 0:
            return "none"
        v1_dirs = [self.root / "memory", self.root / "pids"]
        if all((d / "cgroup.procs").exists() for d in v1_dirs):
            try:
                for d in v1_dirs:
                    (d / _GROUP).mkdir(exist_ok=True)
                return "v1"
            except OSError as exc:
                log.warning("cgroup v1 not writable (%s)", exc)
        controllers = self.root / "cgroup.controllers"
        if controllers.exists() and {"memory", "pids"} <= set(controllers.read_text().split()):
            try:
                (self.root / _GROUP).mkdir(exist_ok=True)
                (self.root / "cgroup.subtree_control").write_text("+memory +pids")
                (self.root / _GROUP / "cgroup.subtree_control").write_text("+memory +pids")
                return "v2"
            except OSError as exc:
                log.warning("cgroup v2 not writable (%s)", exc)
        return "none"

    def prepare(self, key: str) -> list[str]:
        """Create the namespace's groups (once per process); return the cgroup.procs files."""
        prepared = self._prepared.get(key)
        if prepared is None or not all(os.path.exists(p) for p in prepared):
            prepared = self._prepared[key] = self._create(key)
        return prepared

    def _create(self, key: str) -> list[str]:
        if self.mode == "v1":
            memory = self.root / "memory" / _GROUP / key
            pids = self.root / "pids" / _GROUP / key
            memory.mkdir(exist_ok=True)
            pids.mkdir(exist_ok=True)
            (memory / "memory.limit_in_bytes").write_text(str(self.memory_bytes))
            _try_write(memory / "memory.memsw.limit_in_bytes", str(self.memory_bytes))
            (pids / "pids.max").write_text(str(self.max_pids))
            return [str(memory / "cgroup.procs"), str(pids / "cgroup.procs")]
        if self.mode == "v2":
            group = self.root / _GROUP / key
            group.mkdir(exist_ok=True)
            (group / "memory.max").write_text(str(self.memory_bytes))
            _try_write(group / "memory.swap.max", "0")
            (group / "pids.max").write_text(str(self.max_pids))
            return [str(group / "cgroup.procs")]
        return []

    def prepare_exec(self, key: str) -> tuple[list[str], Path | None]:
        """The cgroup.procs files one exec joins, and its own leaf group (None without cgroups).

        Each exec gets a leaf under the namespace's process group, so every process it starts
        can be found and killed afterwards (``reap``) without touching a concurrent exec of the
        same namespace. The namespace's limits still hold: they apply to the whole subtree.
        """
        procs = self.prepare(key)
        if self.mode == "v1":
            parent = self.root / "pids" / _GROUP / key
        elif self.mode == "v2":
            parent = self.root / _GROUP / key
        else:
            return procs, None
        leaf = parent / f"exec-{secrets.token_hex(6)}"
        leaf.mkdir()
        replaced = str(parent / "cgroup.procs")
        return [str(leaf / "cgroup.procs") if p == replaced else p for p in procs], leaf

    def reap(self, leaf: Path, timeout_s: float = 10.0) -> bool:
        """Kill every process left in an exec's leaf, wait until it is empty, remove it.

        bubblewrap reports the command's exit before its pid namespace is torn down, and a
        killed bwrap leaves that teardown to the kernel; either way processes may linger for
        a moment. Returns False (and logs) if some survive ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                pids = [int(p) for p in (leaf / "cgroup.procs").read_text().split()]
            except FileNotFoundError:
                return True
            if not pids:
                with contextlib.suppress(OSError):
                    leaf.rmdir()
                if not leaf.exists():
                    return True
            if time.monotonic() > deadline:
                log.error("processes %s of %s survived their exec", pids, leaf)
                return False
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.002)


def _try_write(path: Path, value: str) -> None:
    # Swap accounting is often disabled; the memory limit still holds without it.
    with contextlib.suppress(OSError):
        path.write_text(value)
