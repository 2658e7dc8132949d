"""Per-namespace cgroups (memory and process caps), v1 or v2, whichever this host lets us write.

Most user machines run cgroup v2 only; these CI machines mount v1 controllers. When neither is
writable (not root, or a read-only hierarchy) the runtime falls back to rlimits and says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
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

    def release(self) -> None:
        """Remove the groups this process made. Left behind they pile up (one per namespace per
        server run), and every cgroup walker pays for them: the kubelet's stats loop took ~40%
        of a core at idle over ~5,000 stale groups. A group something still runs in stays."""
        for key, files in list(self._prepared.items()):
            busy = []
            for procs in files:
                try:
                    os.rmdir(os.path.dirname(procs))
                except FileNotFoundError:
                    pass
                except OSError:
                    busy.append(procs)
            if busy:
                self._prepared[key] = busy
            else:
                del self._prepared[key]

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


def _try_write(path: Path, value: str) -> None:
    # Swap accounting is often disabled; the memory limit still holds without it.
    with contextlib.suppress(OSError):
        path.write_text(value)
