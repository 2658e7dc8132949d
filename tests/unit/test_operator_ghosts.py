"""Every timer of the operator declines objects kopf has seen deleted (see trove_operator.ghosts).

The end-to-end proof, against a real operator, is tests/e2e/test_operator_ghosts.py; this
keeps a timer added later from leaving the filter out.
"""

from __future__ import annotations

import asyncio

import kopf

import trove_operator
from trove_operator import ghosts


def test_every_timer_is_filtered_by_the_ghost_check() -> None:
    registry = kopf.get_default_registry()
    timers = list(registry._spawning.get_all_handlers())
    assert {t.id for t in timers} >= {"stop_idle", "resync", "keep_pool_warm"}
    assert all(t.when is ghosts.alive for t in timers), [t.id for t in timers if t.when is not ghosts.alive]
    assert trove_operator.ghosts is ghosts  # registered with the package, not only through handlers


def test_only_a_deleted_event_marks_the_object() -> None:
    memo = kopf.Memo()
    for kind in ("ADDED", "MODIFIED", None):
        asyncio.run(ghosts.mark_deleted(event={"type": kind, "object": {}}, memo=memo))
        assert ghosts.alive(memo=memo)
    asyncio.run(ghosts.mark_deleted(event={"type": "DELETED", "object": {}}, memo=memo))
    assert not ghosts.alive(memo=memo)
