"""Keep kopf from running timers for an object that is already gone.

kopf 1.45 batches a quick create and delete into one DELETED event, and a DELETED body has no
``deletionTimestamp`` when the object went before kopf added its finalizer. kopf then spawns
the object's timers from that body, forgets the object, and nothing ever stops them (the
same happens to timers spawned from the ADDED event if the delete follows before the
finalizer patch). Such ghost timers ran our syncs every few seconds until the operator
restarted: each logged a 404, created a NetworkPolicy for nothing, could claim a warm-pool pod
for a namespace that no longer exists, and a ghost pool's timer created members.

kopf runs watching handlers before it spawns or re-matches timers in the same cycle, so the
DELETED event marks the object's own memo here and the timers' ``when`` filter declines it:
none are spawned, and running ones are stopped as no longer matching.
"""

from __future__ import annotations

from typing import Any

import kopf

from trove_core.crd import GROUP, PLURAL, POOL_PLURAL, VERSION

_DELETED = "trove_object_deleted"


def alive(memo: kopf.Memo, **_: Any) -> bool:
    """The ``when`` filter of every timer: False once the object's DELETED event arrived."""
    return not memo.get(_DELETED)


@kopf.on.event(GROUP, VERSION, PLURAL)
@kopf.on.event(GROUP, VERSION, POOL_PLURAL)
async def mark_deleted(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # Async: it runs for every event, and needs no slot in the sync handlers' thread pool.
    if event.get("type") == "DELETED":
        memo[_DELETED] = True  # this object's memo: kopf gives each object a shallow copy
