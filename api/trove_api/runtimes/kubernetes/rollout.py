"""Rolling a changed sandbox template out to the TroveNamespaces this API created.

The API owns the template: it builds each namespace's spec from its TROVE_K8S_* settings, and
only it knows which calls are in flight. So after a settings change (a ``helm upgrade`` of
``sandbox.*``) each API replica compares the managed objects' template with its own and patches
the spec according to ``TROVE_K8S_ROLLOUT``; the operator then replaces the pod through its
usual spec-hash check, keeping the PVC. ``idle`` patches a namespace only when it is suspended
(no pod: it wakes on the new template) or idle: no call of this replica in flight or holding
background processes, and no activity, local or stamped on the object by any replica, for
``TROVE_K8S_ROLLOUT_IDLE_S``. A namespace that is not idle stays pending and is looked at again
every ``retry_s``; one found suspended when a call wakes it gets the new template with the wake.

Several replicas may run this at once: each patch carries the object's resourceVersion (a
write in between, such as another replica's activity stamp, makes it a no-op until the next
look), and the objects record when the writing replica started, so during a rolling upgrade
an old replica never rolls back what a newer one wrote. Objects without the API's
managed-by label (made with kubectl) are left alone.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from trove_api.runtimes.kubernetes.kubeapi import KubeApi, Manifest
from trove_core.crd import ANNOTATION_LAST_ACTIVITY, LABEL_MANAGED_BY
from trove_core.template import (
    ANNOTATION_TEMPLATE_AT,
    ANNOTATION_TEMPLATE_REVISION,
    template_of,
    template_revision,
)

log = logging.getLogger(__name__)

Policy = Literal["idle", "immediate", "never"]
Decision = Literal["roll", "wait", "leave"]
MANAGER = "trove-api"
# How long a template written by a replica started after this one is left alone. A rolling
# upgrade ends well within it; past it, a replica restarted with old settings mid-upgrade
# (which stamps a later start) no longer blocks the new ones for good.
NEWER_GRACE_S = 900.0
# Every managed object is listed again this often (besides at start-up): catches objects an
# older replica created during an upgrade and that no call has brought here since.
RELIST_S = 600.0
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def stamp(at: float) -> str:
    return time.strftime(_STAMP, time.gmtime(at))


def stamp_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(calendar.timegm(time.strptime(value, _STAMP)))
    except ValueError:
        return None


def managed(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(LABEL_MANAGED_BY) == MANAGER)


def stale(obj: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether the object's template differs from ``wanted`` (a template, see template_of)."""
    return template_of(obj.get("spec") or {}) != template_of(wanted)


def newer_elsewhere(obj: Mapping[str, Any], started: float, now: float) -> bool:
    """Whether a replica started after this one wrote the object's template (recently): during
    a rolling upgrade that is a newer release, whose template this replica must not undo."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    written_by = stamp_time(annotations.get(ANNOTATION_TEMPLATE_AT))
    # Stamps have whole seconds: two replicas started within one count as the same age.
    return written_by is not None and written_by > math.floor(started) and now - written_by < NEWER_GRACE_S


def idle_seconds(obj: Mapping[str, Any], local_activity: float | None, now: float) -> float | None:
    """Seconds since the namespace was last used: the later of the stamp on the object (any
    replica's activity, or its creation) and this replica's own record."""
    meta = obj.get("metadata") or {}
    recorded = stamp_time((meta.get("annotations") or {}).get(ANNOTATION_LAST_ACTIVITY))
    seen = [t for t in (recorded, stamp_time(meta.get("creationTimestamp")), local_activity) if t is not None]
    return now - max(seen) if seen else None


def decide(
    policy: Policy, *, suspended: bool, busy: bool, idle_s: float | None, idle_after_s: float
) -> Decision:
    """Whether a stale namespace is rolled now, waits for an idle moment, or is left as it is."""
    if policy == "never":
        return "leave"
    if policy == "immediate" or suspended:
        return "roll"  # a suspended namespace has no pod: nothing runs that the new one could cut
    if busy or (idle_s is not None and idle_s < idle_after_s):
        return "wait"
    return "roll"


def rollout_patch(obj: Mapping[str, Any], wanted: Mapping[str, Any], template_at: str) -> Manifest:
    """The merge patch that moves ``obj`` to the ``wanted`` template, only if it is unchanged since read."""
    meta = obj.get("metadata") or {}
    return {
        "metadata": {
            "resourceVersion": meta.get("resourceVersion"),
            "annotations": {
                ANNOTATION_TEMPLATE_REVISION: template_revision(wanted),
                ANNOTATION_TEMPLATE_AT: template_at,
            },
        },
        "spec": template_of(wanted),
    }


@dataclass
class Hold:
    """A namespace held still by the runtime while it is patched: ``busy`` if a call of this
    replica is in flight (or its sandbox runs background processes); ``rolled`` once patched."""

    busy: bool = False
    rolled: bool = False


class HoldFn(Protocol):
    def __call__(self, name: str, *, force: bool) -> contextlib.AbstractAsyncContextManager[Hold]: ...


@dataclass
class Counts:
    rolled: int = 0
    waiting: int = 0
    left: int = 0
    names: dict[str, Decision] = field(default_factory=dict)


class Rollout:
    def __init__(
        self,
        api: KubeApi,
        *,
        policy: Policy,
        wanted: Mapping[str, Any],
        idle_after_s: float,
        hold: HoldFn,
        last_active: Callable[[str], float | None],
        started: float | None = None,
    ) -> None:
        self.api = api
        self.policy = policy
        self.wanted = template_of(wanted)
        self.revision = template_revision(self.wanted)
        self.idle_after_s = idle_after_s
        self.retry_s = min(30.0, max(1.0, idle_after_s))
        self.hold = hold
        self.last_active = last_active
        self.started = time.time() if started is None else started
        self.template_at = stamp(self.started)
        self.pending: set[str] = set()
        self._kick = asyncio.Event()

    # -- from the calls ---------------------------------------------------------------------

    def notice(self, obj: Mapping[str, Any]) -> None:
        """A call read this object: if it needs rolling, the loop looks at it soon."""
        name = (obj.get("metadata") or {}).get("name")
        if self.policy != "never" and name and name not in self.pending and self._rollable(obj):
            self.pending.add(name)
            self._kick.set()

    def on_wake(self, obj: Mapping[str, Any]) -> Manifest:
        """Template fields to add to the patch that wakes a suspended ``obj`` (an idle moment by
        definition: no pod runs), or nothing."""
        if self.policy == "never" or not self._rollable(obj):
            return {}
        self.pending.discard(str(obj["metadata"]["name"]))
        patch = rollout_patch(obj, self.wanted, self.template_at)
        del patch["metadata"]["resourceVersion"]  # the wake is unconditional; so is this part
        return patch

    def _rollable(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        return (
            managed(obj)
            and not meta.get("deletionTimestamp")
            and stale(obj, self.wanted)
            and not newer_elsewhere(obj, self.started, time.time())
        )

    # -- the passes -------------------------------------------------------------------------

    async def pass_all(self) -> Counts:
        """Look at every object this API manages."""
        items = await self.api.list_tns(f"{LABEL_MANAGED_BY}={MANAGER}")
        self.pending.clear()
        counts = Counts()
        for obj in items:
            await self._consider(obj, counts)
        return counts

    async def pass_pending(self) -> Counts:
        """Look again at the objects that waited for an idle moment (or that calls noticed)."""
        counts = Counts()
        for name in sorted(self.pending):
            obj = await self.api.get_tns(name)
            if obj is None:
                self.pending.discard(name)
                continue
            await self._consider(obj, counts)
        return counts

    async def run(self) -> None:
        """The background loop: everything at start and every RELIST_S, the pending in between."""
        if self.policy == "never":
            return
        listed_at = -math.inf
        while True:
            try:
                if time.monotonic() - listed_at >= RELIST_S:
                    counts = await self.pass_all()
                    listed_at = time.monotonic()
                else:
                    counts = await self.pass_pending()
                if counts.rolled or counts.waiting:
                    log.info(
                        "sandbox template %s: %d namespaces rolled, %d waiting for an idle moment",
                        self.revision,
                        counts.rolled,
                        counts.waiting,
                    )
            except Exception:  # the next round is the retry
                log.exception("sandbox template rollout pass failed")
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.retry_s if self.pending else RELIST_S):
                    await self._kick.wait()

    async def _consider(self, obj: Manifest, counts: Counts) -> None:
        name = str(obj["metadata"]["name"])
        if not self._rollable(obj):
            self.pending.discard(name)
            return
        spec = obj.get("spec") or {}
        now = time.time()
        decision = decide(
            self.policy,
            suspended=bool(spec.get("suspended")),
            busy=False,
            idle_s=idle_seconds(obj, self.last_active(name), now),
            idle_after_s=self.idle_after_s,
        )
        if decision == "roll":
            async with self.hold(name, force=self.policy == "immediate") as held:
                if held.busy:
                    decision = "wait"
                else:
                    # None: changed since read (or gone); the next look decides afresh.
                    held.rolled = await self.api.patch_tns_unchanged(name, self._patch(obj)) is not None
                    decision = "roll" if held.rolled else "wait"
        if decision == "wait":
            self.pending.add(name)
            await self._show_wanted(obj)
            counts.waiting += 1
        elif decision == "roll":
            self.pending.discard(name)
            log.info("rolled %s to sandbox template %s", name, self.revision)
            counts.rolled += 1
        else:
            self.pending.discard(name)
            counts.left += 1
        counts.names[name] = decision

    def _patch(self, obj: Manifest) -> Manifest:
        return rollout_patch(obj, self.wanted, self.template_at)

    async def _show_wanted(self, obj: Manifest) -> None:
        """Record the wanted revision on a namespace that waits, so the operator's status (and
        ``kubectl get tns``) shows it next to the running one."""
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if annotations.get(ANNOTATION_TEMPLATE_REVISION) != self.revision:
            patch = {"metadata": {"annotations": {ANNOTATION_TEMPLATE_REVISION: self.revision}}}
            await self.api.patch_tns(str(obj["metadata"]["name"]), patch)
