"""Process trees and their memory, read from /proc: what a server keeps running, found by parentage.

The sandbox memory figure must not depend on how the local runtime arranges its processes
(a spawn chain that execs into bubblewrap, a network helper beside it, whatever comes next), so
it counts every descendant of the server process: /proc/*/stat gives each process's parent.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")


def parse_ppid(stat_text: str) -> int:
    """The parent pid in a /proc/PID/stat line (field 4; the name in field 2 may hold spaces)."""
    return int(stat_text.rpartition(")")[2].split()[1])


def descendants(ppids: Mapping[int, int], root: int) -> set[int]:
    """Every process below ``root`` (not ``root`` itself) in a pid -> parent pid table."""
    children: dict[int, list[int]] = {}
    for pid, parent in ppids.items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def parse_pss_kb(smaps_rollup_text: str) -> int:
    """The ``Pss:`` line of /proc/PID/smaps_rollup, in kB."""
    for line in smaps_rollup_text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise ValueError("no Pss line in smaps_rollup")


def ppid_table(proc: Path = PROC) -> dict[int, int]:
    """pid -> parent pid of every process now (ones that exit while we read are skipped)."""
    table: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            table[int(entry.name)] = parse_ppid((entry / "stat").read_text())
    return table


def server_descendants(pid: int) -> set[int]:
    return descendants(ppid_table(), pid)


def command_name(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def pid_namespace(pid: int) -> str | None:
    """The pid namespace a process lives in (``pid:[4026531836]``), None if it is gone."""
    try:
        return os.readlink(PROC / str(pid) / "ns" / "pid")
    except OSError:
        return None


def sandbox_count(pids: Iterable[int], host_pid_namespace: str | None) -> int:
    """How many distinct pid namespaces other than the host's hold ``pids``: one per sandbox.

    Every sandbox has a pid namespace of its own (bubblewrap's, or a pod's), and helpers such
    as the network's user-mode NAT run beside it in the host's: this tells a warm sandbox
    from a helper left running, whatever the runtime's process layout.
    """
    namespaces = {pid_namespace(pid) for pid in pids}
    return len(namespaces - {None, host_pid_namespace})


@dataclass
class TreeMemory:
    """Summed PSS of some processes; which could not be read (gone, or not ours to read)."""

    pss_kb: int = 0
    pids: list[int] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)
    names: dict[str, int] = field(default_factory=dict)
    # PSS by kind of process (``process_kind``): which part of a sandbox costs what.
    pss_kb_by_kind: dict[str, int] = field(default_factory=dict)
    processes_by_kind: dict[str, int] = field(default_factory=dict)


def process_kind(name: str, parent_name: str) -> str:
    """``python3 under bwrap``: a name with its parent's tells apart what a name alone does not
    (the agent from a fork of it, the outer bubblewrap from the one inside its pid namespace)."""
    return f"{name} under {parent_name}"


def pss_of(pids: Iterable[int], ppids: Mapping[int, int] | None = None) -> TreeMemory:
    """Summed PSS of ``pids``; by kind too when their parents (a ``ppid_table``) are given."""
    memory = TreeMemory()
    for pid in sorted(pids):
        try:
            kb = parse_pss_kb((PROC / str(pid) / "smaps_rollup").read_text())
        except (OSError, ValueError):
            memory.unreadable.append(pid)
            continue
        memory.pss_kb += kb
        memory.pids.append(pid)
        name = command_name(pid)
        memory.names[name] = memory.names.get(name, 0) + 1
        if ppids is not None:
            kind = process_kind(name, command_name(ppids[pid]) if pid in ppids else "?")
            memory.pss_kb_by_kind[kind] = memory.pss_kb_by_kind.get(kind, 0) + kb
            memory.processes_by_kind[kind] = memory.processes_by_kind.get(kind, 0) + 1
    return memory


def sandboxes_below(root: int) -> tuple[TreeMemory, int]:
    """Every process below ``root`` with its PSS (by kind too), and how many sandboxes they make up.

    All of them, not only those that appeared since some moment: a server may have started a
    sandbox ahead (a spare) that a namespace claimed later.
    """
    ppids = ppid_table()
    processes = descendants(ppids, root)
    return pss_of(processes, ppids), sandbox_count(processes, pid_namespace(root))
