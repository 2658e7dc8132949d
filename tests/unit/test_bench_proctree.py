"""bench/proctree.py: sandboxes are found by parentage and their PSS summed from smaps_rollup."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from bench.proctree import (
    descendants,
    parse_ppid,
    parse_pss_kb,
    pid_namespace,
    process_kind,
    pss_of,
    sandbox_count,
    sandboxes_below,
    server_descendants,
)


def test_the_parent_pid_is_read_past_a_command_name_with_spaces_and_parentheses() -> None:
    assert parse_ppid("4242 (python3 (agent) x) S 17 4242 4242 0 -1 4194560") == 17


def test_descendants_are_every_generation_below_the_root_and_nothing_beside_it() -> None:
    ppids = {10: 1, 11: 10, 12: 11, 13: 12, 14: 10, 20: 1, 21: 20}
    assert descendants(ppids, 10) == {11, 12, 13, 14}
    assert descendants(ppids, 13) == set()
    assert descendants(ppids, 99) == set()


def test_pss_is_the_pss_line_not_the_swap_pss_or_rss_line() -> None:
    text = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss: 23000 kB\nPss: 12745 kB\nSwapPss: 9 kB\n"
    assert parse_pss_kb(text) == 12745


def test_a_live_grandchild_is_found_and_its_memory_read() -> None:
    # sh (child) starts sleep (grandchild) in the background and waits for it.
    child = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    try:
        found: set[int] = set()
        # Only this child's tree: the suite's own servers (descendants of this process too) run
        # warm sandboxes whose processes would count as well.
        for _ in range(1000):
            found = server_descendants(os.getpid()) & ({child.pid} | server_descendants(child.pid))
            if len(found) >= 2:
                break
            time.sleep(0.01)
        memory = pss_of(found)
        assert child.pid in found
        assert memory.names.get("sleep") == 1
        assert memory.pss_kb > 0
        assert not memory.unreadable
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def test_only_processes_in_a_pid_namespace_of_their_own_count_as_sandboxes() -> None:
    # This test's own process and its parent share the host's pid namespace: no sandbox.
    host = pid_namespace(os.getpid())
    assert host is not None
    assert sandbox_count([os.getpid(), os.getppid()], host) == 0
    assert sandbox_count([os.getpid()], "pid:[1]") == 1
    assert sandbox_count([], host) == 0


def test_a_process_kind_is_its_name_under_its_parents() -> None:
    assert process_kind("python3", "bwrap") == "python3 under bwrap"
    assert process_kind("python3", "python3") != process_kind("python3", "bwrap")


def test_every_sandbox_below_a_root_is_counted_also_those_started_before_the_measurement() -> None:
    # Two pid namespaces of their own (bubblewrap's) and one plain helper beside them, all
    # started before sandboxes_below looks: a spare a server started ahead counts like the rest.
    bwrap = "bwrap --unshare-pid --unshare-user --dev-bind / / sleep 30"
    root = subprocess.Popen(["sh", "-c", f"{bwrap} & {bwrap} & sleep 30 & wait"], start_new_session=True)
    try:
        memory, found = pss_of([]), 0
        for _ in range(1000):
            memory, found = sandboxes_below(root.pid)
            if found == 2 and memory.names.get("sleep") == 3:
                break
            time.sleep(0.01)
        assert found == 2
        assert memory.processes_by_kind["sleep under sh"] == 1
        assert memory.processes_by_kind["bwrap under sh"] == 2
        # Inside each namespace: bubblewrap's pid 1, and sleep below it.
        assert memory.processes_by_kind["sleep under bwrap"] == 2
        assert sum(memory.pss_kb_by_kind.values()) == memory.pss_kb > 0
    finally:
        os.killpg(root.pid, signal.SIGKILL)
        root.wait()
