"""How far the event hub may advance on PostgreSQL without skipping an event that commits late.

``events.seq`` comes from a sequence, so it is handed out at insert time, not at commit
time: with several replicas (or writers in different workspaces) seq 10 can commit after
seq 11. A hub that had moved its head to 11 would never see 10. So the hub publishes only a
gap-free run of seqs; a gap (a seq missing below one it can see) is waited out until it is
*settled*, i.e. until every transaction that could still commit it has ended:

* a missing seq below a visible one was drawn before the visible row committed, so before
  the read's snapshot: its transaction committed (then the row is visible), rolled back
  (the gap is permanent) or was in progress, i.e. in the snapshot's ``xip`` list;
* the candidates are the ``xip`` transactions of this database still running just after
  the read (``pg_stat_activity``); once a later snapshot shows none of them in progress,
  a row they committed would be visible, so a gap still there is permanent.

Gaps come from rolled-back transactions and are rare; one costs a short retry, not an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

XID_MOD = 1 << 32  # pg_stat_activity shows 32-bit xids; snapshots carry 64-bit ones


@dataclass(frozen=True)
class Snapshot:
    in_progress: frozenset[int]  # the read snapshot's xip (32-bit xids)
    ours: frozenset[int] = frozenset()  # those of them in this database still running after it


def read_snapshot(conn: Connection) -> frozenset[int]:
    """The in-progress xids of the transaction's snapshot (first statement under REPEATABLE READ)."""
    rows = conn.execute(text("SELECT x::text FROM pg_snapshot_xip(pg_current_snapshot()) AS x")).scalars()
    return frozenset(int(value) % XID_MOD for value in rows)


def still_running(conn: Connection, in_progress: frozenset[int]) -> frozenset[int]:
    """Those of ``in_progress`` that are this database's transactions and have not ended yet."""
    if not in_progress:
        return frozenset()
    rows = conn.execute(
        text(
            "SELECT backend_xid::text FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_xid IS NOT NULL"
        )
    ).scalars()
    return in_progress & frozenset(int(value) for value in rows)


class GapGuard:
    """Remembers the gap the hub waits on and the transactions that could still fill it."""

    def __init__(self) -> None:
        self._waiting: tuple[int, frozenset[int]] | None = None

    def admit(self, head: int, seqs: Sequence[int], snapshot: Snapshot) -> int:
        """How many of ``seqs`` (ascending, all > ``head``) may be published now."""
        expected = head + 1
        for count, seq in enumerate(seqs):
            if seq != expected and not self._settled(expected, snapshot):
                return count
            expected = seq + 1
        return len(seqs)

    def _settled(self, gap: int, snapshot: Snapshot) -> bool:
        if not snapshot.in_progress:
            self._waiting = None  # nothing in flight at the read: the gap was rolled back
            return True
        if self._waiting is not None and self._waiting[0] == gap:
            remaining = self._waiting[1] & snapshot.in_progress
            if not remaining:
                self._waiting = None
                return True
            self._waiting = (gap, remaining)
            return False
        self._waiting = (gap, snapshot.ours)
        return False
