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
    pss_of,
    sandbox_count,
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
