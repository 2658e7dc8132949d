"""Making room on a full node: suspend the least recently used idle namespace.

When a namespace's pod cannot be scheduled (Insufficient cpu/memory), waiting for the idle
limit would leave its callers with 503s for minutes. A namespace nobody has called for a while
gives its pod up instead (its PVC stays; its next call starts the pod again). Only Ready ones
idle at least ``operator_make_room_idle_s`` qualify: longer than the API's activity flush plus
an exec's wall clock, so a namespace with a call in flight is never chosen.

While none qualifies, a waiting namespace looks again at a doubling interval (``Pacing``): the
periodic pass reaches a pending namespace every few seconds, and listing every namespace and
warning that often for a node that stays full was only noise.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from trove_core.crd import current_phase
from trove_operator.kube import Kube, Manifest

log = logging.getLogger(__name__)

UNSCHEDULABLE = "Unschedulable"
FIRST_RETRY_S = 10.0
MAX_RETRY_S = 300.0


@dataclass
class _Wait:
    next_try: float
    gap: float
    looks: int


@dataclass
class Pacing:
    """When each waiting namespace may look for room again: at once, then after ``first_s``,
    doubling up to ``max_s`` while nothing qualifies. Forgotten once its pod is placed."""

    first_s: float = FIRST_RETRY_S
    max_s: float = MAX_RETRY_S
    _waits: dict[str, _Wait] = field(default_factory=dict)

    def due(self, key: str, now: float) -> bool:
        wait = self._waits.get(key)
        return wait is None or now >= wait.next_try

    def found_nothing(self, key: str, now: float) -> int:
        """Record a look that found nothing; how many in a row, this one included."""
        last = self._waits.get(key)
        gap = self.first_s if last is None else min(last.gap * 2, self.max_s)
        looks = 1 if last is None else last.looks + 1
        self._waits[key] = _Wait(now + gap, gap, looks)
        return looks

    def forget(self, key: str) -> None:
        self._waits.pop(key, None)


PACING = Pacing()


def idle_seconds(body: Manifest, at: dt.datetime) -> float | None:
    from trove_operator.reconciler import idle_for  # the one reading of the activity stamp

    return idle_for(body, at)


def pick_victim(
    namespaces: list[Manifest], waiting: str, at: dt.datetime, min_idle_s: float
) -> Manifest | None:
    """The Ready, running namespace idle longest (at least ``min_idle_s``), never ``waiting``."""
    best: tuple[float, Manifest] | None = None
    for body in namespaces:
        meta = body.get("metadata") or {}
        if meta.get("name") == waiting or meta.get("deletionTimestamp"):
            continue
        if (body.get("spec") or {}).get("suspended") or current_phase(body) != "Ready":
            continue
        idle = idle_seconds(body, at)
        if idle is None or idle < min_idle_s:
            continue
        if best is None or idle > best[0]:
            best = (idle, body)
    return best[1] if best else None


def make_room(
    kube: Kube,
    waiting: Manifest,
    min_idle_s: float,
    at: dt.datetime,
    *,
    pacing: Pacing = PACING,
    now: float | None = None,
) -> str | None:
    """Suspend one namespace for ``waiting``'s pod; its name, or None when none qualifies (or
    it is not yet time to look again)."""
    meta = waiting["metadata"]
    where, waiting_name = meta["namespace"], meta["name"]
    key, clock = _pacing_key(waiting), time.monotonic() if now is None else now
    if not pacing.due(key, clock):
        return None
    victim = pick_victim(kube.list_tns(where), waiting_name, at, min_idle_s)
    if victim is None:
        if pacing.found_nothing(key, clock) == 1:
            log.warning("no idle namespace to suspend for %s/%s: the node stays full", where, waiting_name)
        return None
    pacing.forget(key)
    name = victim["metadata"]["name"]
    log.info("suspending %s/%s (least recently used) to make room for %s", where, name, waiting_name)
    kube.patch_spec(where, name, {"suspended": True})
    return str(name)


def placed(waiting: Manifest) -> None:
    """``waiting``'s pod is no longer unschedulable: its next wait starts from the first look."""
    PACING.forget(_pacing_key(waiting))


def _pacing_key(waiting: Manifest) -> str:
    meta = waiting["metadata"]
    return f"{meta['namespace']}/{meta['name']}"
