"""Making room on a full node: suspend the least recently used idle namespace.

When a namespace's pod cannot be scheduled (Insufficient cpu/memory), waiting for the idle
limit would leave its callers with 503s for minutes. A namespace nobody has called for a while
gives its pod up instead (its PVC stays; its next call starts the pod again). Only Ready ones
idle at least ``operator_make_room_idle_s`` qualify: longer than the API's activity flush plus
an exec's wall clock, so a namespace with a call in flight is never chosen.
"""

from __future__ import annotations

import datetime as dt
import logging

from trove_core.crd import current_phase
from trove_operator.kube import Kube, Manifest

log = logging.getLogger(__name__)

UNSCHEDULABLE = "Unschedulable"


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


def make_room(kube: Kube, waiting: Manifest, min_idle_s: float, at: dt.datetime) -> str | None:
    """Suspend one namespace for ``waiting``'s pod; its name, or None when none qualifies."""
    meta = waiting["metadata"]
    where, waiting_name = meta["namespace"], meta["name"]
    victim = pick_victim(kube.list_tns(where), waiting_name, at, min_idle_s)
    if victim is None:
        log.warning("no idle namespace to suspend for %s/%s: the node stays full", where, waiting_name)
        return None
    name = victim["metadata"]["name"]
    log.info("suspending %s/%s (least recently used) to make room for %s", where, name, waiting_name)
    kube.patch_spec(where, name, {"suspended": True})
    return str(name)
