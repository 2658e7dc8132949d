"""Per-namespace cgroups (memory and process caps), v1 or v2, whichever this host lets us write.

Most user machines run cgroup v2 only; these CI machines mount v1 controllers. When neither is
writable (not root, or a read-only hierarchy) the runtime falls back to rlimits and says so.

Each server process keeps its groups under its own ``trove/srv-<pid>-<start time>``. It removes
them when it shuts down; a server that was killed cannot, so every server starting up removes
the groups of owners that are no longer running. A live server's groups are never touched,
even when empty between two execs, since its pid and start time still match.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

CgroupMode = Literal["v1", "v2", "none"]
_GROUP = "trove"
_OWNER = re.compile(r"srv-(\d+)-(\d+)")
EXIT_WAIT_S = 1.0


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if it is not running."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat_file:
            fields = stat_file.read().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 of proc(5); the name in parentheses may hold spaces
    except (OSError, IndexError, ValueError):
        return None


def owner_name(pid: int) -> str:
    return f"srv-{pid}-{start_time(pid)}"


class Cgroups:
    def __init__(self, memory_bytes: int, max_pids: int, root: Path = Path("/sys/fs/cgroup")):
        self.memory_bytes = memory_bytes
        self.max_pids = max_pids
        self.root = root
        self.mode: CgroupMode = self._detect()
        self.owner = owner_name(os.getpid())
        self._prepared: dict[str, list[str]] = {}
        if self.mode != "none":
            self.sweep()

    def _bases(self) -> list[Path]:
        """The directories that hold the owners' groups, one per hierarchy."""
        if self.mode == "v1":
            return [self.root / "memory" / _GROUP, self.root / "pids" / _GROUP]
        if self.mode == "v2":
            return [self.root / _GROUP]
        return []

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
        deadline = time.monotonic() + EXIT_WAIT_S  # one wait for all, however many groups
        for key, files in list(self._prepared.items()):
            busy = [procs for procs in files if not _remove_group(procs, deadline)]
            if busy:
                self._prepared[key] = busy
            else:
                del self._prepared[key]
        for base in self._bases():
            # Still holding groups (another runtime in this process, or a busy one): it stays.
            with contextlib.suppress(OSError):
                os.rmdir(base / self.owner)

    def usage(self, key: str) -> dict[str, int]:
        """What the namespace's groups count (``SandboxUsage`` fields); {} without groups."""
        files = self._prepared.get(key)
        if not files:
            return {}
        groups = [Path(procs).parent for procs in files]
        found: dict[str, int] = {"mem_total": self.memory_bytes}
        if self.mode == "v1":
            memory = groups[0]
            current = _read_int(memory / "memory.usage_in_bytes")
            cache = _stat_value(memory / "memory.stat", "total_cache")
        else:
            current = _read_int(groups[0] / "memory.current")
            cache = _stat_value(groups[0] / "memory.stat", "file")
            usage_usec = _stat_value(groups[0] / "cpu.stat", "usage_usec")
            if usage_usec is not None:
                found["cpu_ns"] = usage_usec * 1000
        if current is None:
            return {}
        found["mem_used"] = current
        if cache is not None:
            found["mem_cache"] = cache
        return found

    def remove(self, key: str) -> None:
        """Remove one namespace's groups (its sandbox has stopped); one still in use stays."""
        files = self._prepared.pop(key, None)
        if files:
            deadline = time.monotonic() + EXIT_WAIT_S
            busy = [procs for procs in files if not _remove_group(procs, deadline)]
            if busy:
                self._prepared[key] = busy

    def rename(self, old: str, new: str) -> bool:
        """Give ``old``'s groups, and what runs in them, to ``new`` (a spare sandbox claimed by a
        namespace); False, nothing changed, if ``new`` has groups already or a rename fails."""
        files = self._prepared.get(old)
        if files is None or new in self._prepared:
            return False
        done: list[tuple[Path, Path]] = []
        try:
            for procs in files:
                group = Path(procs).parent
                os.rename(group, group.with_name(new))
                done.append((group, group.with_name(new)))
        except OSError:
            for source, target in reversed(done):
                with contextlib.suppress(OSError):
                    os.rename(target, source)
            return False
        del self._prepared[old]
        self._prepared[new] = [str(target / "cgroup.procs") for _, target in done]
        return True

    def sweep(self) -> int:
        """Remove the groups of servers that stopped without removing them; returns how many."""
        removed = 0
        for base in self._bases():
            try:
                owners = [entry for entry in base.iterdir() if entry.is_dir()]
            except OSError:
                continue
            for owner in owners:
                match = _OWNER.fullmatch(owner.name)
                if match is None or start_time(int(match[1])) == int(match[2]):
                    continue
                try:
                    groups = [entry for entry in owner.iterdir() if entry.is_dir()]
                except OSError:  # another server starting up swept it first
                    continue
                for group in groups:
                    try:
                        group.rmdir()
                        removed += 1
                    except OSError:  # something still runs in it
                        pass
                with contextlib.suppress(OSError):
                    owner.rmdir()
        if removed:
            log.info("removed %d cgroups left by servers that are no longer running", removed)
        return removed

    def _owner_dir(self, base: Path) -> Path:
        owner = base / self.owner
        owner.mkdir(exist_ok=True)
        if self.mode == "v2":
            (owner / "cgroup.subtree_control").write_text("+memory +pids")
        return owner

    def _create(self, key: str) -> list[str]:
        try:
            return self._create_once(key)
        except FileNotFoundError:
            # Another runtime in this process released the owner directory in between.
            return self._create_once(key)

    def _create_once(self, key: str) -> list[str]:
        if self.mode == "v1":
            memory_base, pids_base = self._bases()
            memory = self._owner_dir(memory_base) / key
            pids = self._owner_dir(pids_base) / key
            memory.mkdir(exist_ok=True)
            pids.mkdir(exist_ok=True)
            (memory / "memory.limit_in_bytes").write_text(str(self.memory_bytes))
            _try_write(memory / "memory.memsw.limit_in_bytes", str(self.memory_bytes))
            (pids / "pids.max").write_text(str(self.max_pids))
            return [str(memory / "cgroup.procs"), str(pids / "cgroup.procs")]
        if self.mode == "v2":
            group = self._owner_dir(self._bases()[0]) / key
            group.mkdir(exist_ok=True)
            (group / "memory.max").write_text(str(self.memory_bytes))
            _try_write(group / "memory.swap.max", "0")
            (group / "pids.max").write_text(str(self.max_pids))
            return [str(group / "cgroup.procs")]
        return []


def _remove_group(procs: str, deadline: float) -> bool:
    """rmdir the group of ``procs``; False if a live process is still in it.

    The last process of an exec can still be on its way out when the exec has returned (the
    sandbox's bwrap, reparented to init, tearing down its namespaces): the group counts it until
    it is gone, so for such a one the removal is retried until ``deadline``.
    """
    while True:
        try:
            os.rmdir(os.path.dirname(procs))
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline or not _only_exiting(procs):
                return False
            time.sleep(0.01)


def _only_exiting(procs: str) -> bool:
    try:
        with open(procs, encoding="ascii") as procs_file:
            pids = procs_file.read().split()
    except OSError:
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if cmdline.read(1):  # an exiting process has no memory left, so no cmdline
                    return False
        except OSError:
            continue
    return True


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stat_value(path: Path, key: str) -> int | None:
    """One ``key value`` line of a cgroup stat file (memory.stat, cpu.stat)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(" ")
        if name == key and value.isdigit():
            return int(value)
    return None


def _try_write(path: Path, value: str) -> None:
    # Swap accounting is often disabled; the memory limit still holds without it.
    with contextlib.suppress(OSError):
        path.write_text(value)
