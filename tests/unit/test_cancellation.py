"""The server's code never waits with ``asyncio.wait_for``.

On Python 3.11, ``wait_for`` returns the awaited result, and drops the cancellation, when the
awaited thing completes in the same turn as the cancel (gh-86296, fixed in 3.12). A task that
swallows its cancellation runs on: a terminal's revocation watch kept following the event log
after its socket closed, so ``terminal.closed`` never came (test_event_hub shows the race).
``asyncio.timeout`` does not have the flaw. The sandbox agent is exempt: it runs on whatever
``python3`` a sandbox image has, which may predate ``asyncio.timeout``."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core/trove_core", "api/trove_api", "operator/trove_operator")
EXEMPT = {"api/trove_api/runtimes/agent/trove_agent.py"}
WAIT_FOR = re.compile(r"\basyncio\.wait_for\(|\bfrom asyncio import .*\bwait_for\b")


def test_no_asyncio_wait_for_in_the_server() -> None:
    sources = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert len(sources) > 50, "found too few sources: has the layout moved?"
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sources
        if path.relative_to(ROOT).as_posix() not in EXEMPT
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if WAIT_FOR.search(line)
    ]
    assert not offenders, f"use asyncio.timeout instead of asyncio.wait_for: {offenders}"
