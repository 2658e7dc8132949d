"""trove-agent's ``usage`` op (E2B's get_metrics): its process tree from /proc, its own cgroup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.unit.test_agent import agent
from trove_api.runtimes.agent import trove_agent


def test_the_tree_counts_what_reaped_children_used() -> None:
    before, rss = trove_agent.tree_usage(os.getpid())
    assert rss > 0
    # A child that burns CPU until the kernel has charged it some, then is reaped.
    burn = "import os\nwhile sum(os.times()[:2]) < 0.05: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    after, _ = trove_agent.tree_usage(os.getpid())
    assert after - before >= 40_000_000


async def test_the_usage_op_answers_plausible_figures(tmp_path: Path) -> None:
    async with agent(tmp_path) as session:
        for cgroup in (False, True):
            usage = await session.usage(cgroup=cgroup)
            assert usage.cpu_count >= 1
            assert usage.cpu_ns > 0
            assert usage.mem_used > 0
            assert usage.mem_total > 0


def test_cgroup_figures_when_visible() -> None:
    found = trove_agent.cgroup_usage()  # this host's own cgroup, v1 or v2; {} where none is mounted
    for key in ("cpu_ns", "mem_used", "mem_cache", "mem_total"):
        if key in found:
            value = found[key]
            assert isinstance(value, int)
            assert value >= 0
