"""The sandbox template rollout (API side): revisions, the decision, the passes and the hold.

The Kubernetes API is an in-memory stand-in here that keeps what matters for a rollout: a
resourceVersion per object, merge patches that fail (409) on a stale one, label selection.
On a real cluster: tests/e2e/test_rollout.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from trove_api.runtimes.kubernetes import rollout
from trove_api.runtimes.kubernetes.namespaces import NamespaceControl, build_template, build_tns
from trove_api.runtimes.kubernetes.rollout import Hold, Rollout, decide
from trove_api.runtimes.kubernetes.runtime import KubernetesRuntime
from trove_core.crd import ANNOTATION_LAST_ACTIVITY
from trove_core.runtime import NamespaceRef
from trove_core.settings import Settings
from trove_core.template import (
    ANNOTATION_TEMPLATE_AT,
    ANNOTATION_TEMPLATE_REVISION,
    template_of,
    template_revision,
)

Obj = dict[str, Any]
OLD = Settings()
NEW = Settings(k8s_cpu_limit="2")


def _merge(into: Obj, patch: Obj) -> None:
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


class FakeKubeApi:
    """TroveNamespaces in a dict, with the API server's optimistic concurrency."""

    def __init__(self) -> None:
        self.objects: dict[str, Obj] = {}
        self.version = 0
        self.patches: list[tuple[str, Obj]] = []

    def add(self, obj: Obj) -> Obj:
        self.version += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.version)
        obj["metadata"].setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        self.objects[obj["metadata"]["name"]] = obj
        return obj

    async def get_tns(self, name: str) -> Obj | None:
        found = self.objects.get(name)
        return copy.deepcopy(found) if found else None

    async def create_tns(self, manifest: Obj) -> Obj:
        return self.add(manifest)

    async def list_tns(self, label_selector: str) -> list[Obj]:
        key, value = label_selector.split("=")
        return [
            copy.deepcopy(o)
            for o in self.objects.values()
            if o["metadata"].get("labels", {}).get(key) == value
        ]

    async def patch_tns(self, name: str, patch: Obj) -> Obj | None:
        self.patches.append((name, patch))
        if name not in self.objects:
            return None
        _merge(self.objects[name], copy.deepcopy(patch))
        self.version += 1
        self.objects[name]["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.objects[name])

    async def patch_tns_unchanged(self, name: str, patch: Obj) -> Obj | None:
        live = self.objects.get(name)
        if live is None or live["metadata"]["resourceVersion"] != patch["metadata"]["resourceVersion"]:
            return None  # 404 or 409
        patch = copy.deepcopy(patch)
        del patch["metadata"]["resourceVersion"]
        return await self.patch_tns(name, patch)


def _tns(name: str, settings: Settings = OLD, **spec: Any) -> Obj:
    obj = build_tns(settings, NamespaceRef("ws-1", name))
    obj["metadata"]["name"] = name
    obj["spec"] |= spec
    return obj


def _stamp_ago(seconds: float) -> str:
    return rollout.stamp(time.time() - seconds)


class Holds:
    """The runtime's side, scripted: which namespaces have a call in flight."""

    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.held: list[tuple[str, bool, bool]] = []  # (name, force, rolled)

    @contextlib.asynccontextmanager
    async def __call__(self, name: str, *, force: bool) -> AsyncIterator[Hold]:
        held = Hold(busy=name in self.busy and not force)
        yield held
        self.held.append((name, force, held.rolled))


def _rollout(api: FakeKubeApi, policy: Any = "idle", holds: Holds | None = None, **kw: Any) -> Rollout:
    return Rollout(
        api,  # type: ignore[arg-type]
        policy=policy,
        wanted=build_template(NEW),
        idle_after_s=kw.pop("idle_after_s", 60),
        hold=holds or Holds(),
        last_active=kw.pop("last_active", lambda name: None),
        **kw,
    )


# ── the revision ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("image",), "trove-sandbox:0.2.0"),
        (("imagePullPolicy",), "Never"),
        (("resources", "requests", "cpu"), "20m"),
        (("resources", "requests", "memory"), "48Mi"),
        (("resources", "requests", "ephemeralStorage"), "32Mi"),
        (("resources", "limits", "cpu"), "2"),
        (("resources", "limits", "memory"), "2Gi"),
        (("resources", "limits", "ephemeralStorage"), "2Gi"),
        (("maxProcesses",), 2048),
        (("egress",), "none"),
        (("idleSuspendSeconds",), 60),
    ],
)
def test_each_template_field_changes_the_revision(path: tuple[str, ...], value: Any) -> None:
    spec = _tns("a")["spec"]
    changed = copy.deepcopy(spec)
    leaf = changed
    for key in path[:-1]:
        leaf = leaf[key]
    assert leaf[path[-1]] != value
    leaf[path[-1]] = value
    assert template_revision(changed) != template_revision(spec)
    assert rollout.stale(_tns("a") | {"spec": changed}, spec)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("workspaceId", "ws-2"),
        ("namespace", "b"),
        ("suspended", True),
        ("storage", {"size": "5Gi", "storageClassName": "fast"}),
        ("egressBlocked", ["203.0.113.0/24"]),
        ("egressDns", False),
        ("deletionPolicy", "Retain"),
    ],
)
def test_identity_state_storage_and_own_egress_rules_are_not_template(field: str, value: Any) -> None:
    spec = _tns("a")["spec"]
    assert template_revision(spec | {field: value}) == template_revision(spec)


def test_the_revision_is_stable_short_and_recorded_at_creation() -> None:
    spec = _tns("a")["spec"]
    reordered = dict(reversed(list(spec.items())))
    reordered["resources"] = {
        "limits": spec["resources"]["limits"],
        "requests": spec["resources"]["requests"],
    }
    assert template_revision(reordered) == template_revision(spec)
    assert len(template_revision(spec)) == 10
    # Pinned: a change to the canonical form would roll every namespace once on upgrade.
    assert template_revision({"image": "x"}) == template_revision({"image": "x", "other": 1}) == "ae2690ffaf"
    tns = build_tns(OLD, NamespaceRef("ws-1", "a"), template_at="2026-01-01T00:00:00Z")
    annotations = tns["metadata"]["annotations"]
    assert annotations[ANNOTATION_TEMPLATE_REVISION] == template_revision(tns["spec"])
    assert annotations[ANNOTATION_TEMPLATE_AT] == "2026-01-01T00:00:00Z"
    assert template_of(tns["spec"]) == build_template(OLD)


# ── the decision ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("policy", "suspended", "busy", "idle_s", "expected"),
    [
        ("never", True, False, 1e6, "leave"),
        ("never", False, False, 1e6, "leave"),
        ("immediate", False, True, 0.0, "roll"),
        ("immediate", False, False, 0.0, "roll"),
        ("idle", True, False, 0.0, "roll"),  # no pod: nothing to cut
        ("idle", False, False, 61.0, "roll"),
        ("idle", False, False, 59.0, "wait"),  # used a moment ago
        ("idle", False, True, 1e6, "wait"),  # a call in flight here
        ("idle", False, False, None, "roll"),  # no stamp at all
    ],
)
def test_decide(policy: Any, suspended: bool, busy: bool, idle_s: float | None, expected: str) -> None:
    assert decide(policy, suspended=suspended, busy=busy, idle_s=idle_s, idle_after_s=60) == expected


def test_idle_seconds_takes_the_latest_of_stamp_creation_and_local_activity() -> None:
    now = 1_800_000_000.0
    obj = {"metadata": {"creationTimestamp": rollout.stamp(now - 500)}}
    assert rollout.idle_seconds(obj, None, now) == 500
    obj["metadata"]["annotations"] = {ANNOTATION_LAST_ACTIVITY: rollout.stamp(now - 100)}
    assert rollout.idle_seconds(obj, None, now) == 100
    assert rollout.idle_seconds(obj, now - 5, now) == 5
    assert rollout.idle_seconds({"metadata": {}}, None, now) is None


def test_a_template_from_a_replica_started_later_is_not_undone() -> None:
    started = 1_800_000_000.25
    at = {"metadata": {"annotations": {ANNOTATION_TEMPLATE_AT: rollout.stamp(started + 30)}}}
    assert rollout.newer_elsewhere(at, started, started + 60)
    # Same second (replicas of one release), older, or past the grace: this replica may roll.
    same = {"metadata": {"annotations": {ANNOTATION_TEMPLATE_AT: rollout.stamp(started)}}}
    assert not rollout.newer_elsewhere(same, started, started + 60)
    assert not rollout.newer_elsewhere(at, started + 31, started + 60)
    assert not rollout.newer_elsewhere(at, started, started + 30 + rollout.NEWER_GRACE_S)
    assert not rollout.newer_elsewhere({"metadata": {}}, started, started)


def test_the_patch_carries_the_template_and_the_version_it_was_decided_on() -> None:
    obj = _tns("a")
    obj["metadata"]["resourceVersion"] = "41"
    patch = rollout.rollout_patch(obj, build_template(NEW), "2026-01-01T00:00:00Z")
    assert patch["metadata"]["resourceVersion"] == "41"
    assert patch["spec"] == build_template(NEW)
    assert patch["spec"]["resources"]["limits"]["cpu"] == "2"
    assert patch["metadata"]["annotations"] == {
        ANNOTATION_TEMPLATE_REVISION: template_revision(build_template(NEW)),
        ANNOTATION_TEMPLATE_AT: "2026-01-01T00:00:00Z",
    }
    assert not {"workspaceId", "namespace", "suspended", "storage"} & set(patch["spec"])


# ── the passes ───────────────────────────────────────────────────────────────


def _spec(api: FakeKubeApi, name: str) -> Obj:
    spec: Obj = api.objects[name]["spec"]
    return spec


async def test_idle_rolls_the_idle_and_the_suspended_and_waits_for_the_busy() -> None:
    api, holds = FakeKubeApi(), Holds()
    for name in ("idle", "busy", "recent"):
        api.add(_tns(name))
    api.add(_tns("asleep", suspended=True))
    api.add(_tns("current", NEW))
    api.objects["recent"]["metadata"]["annotations"][ANNOTATION_LAST_ACTIVITY] = _stamp_ago(5)
    unmanaged = _tns("by-kubectl")
    unmanaged["metadata"]["labels"] = {}
    api.add(unmanaged)
    holds.busy.add("busy")
    roller = _rollout(api, holds=holds)

    counts = await roller.pass_all()

    assert counts.names == {"idle": "roll", "busy": "wait", "recent": "wait", "asleep": "roll"}
    new_cpu = [_spec(api, n)["resources"]["limits"]["cpu"] for n in ("idle", "asleep", "busy", "recent")]
    assert new_cpu == ["2", "2", "1", "1"]
    assert _spec(api, "by-kubectl")["resources"]["limits"]["cpu"] == "1"
    assert roller.pending == {"busy", "recent"}
    # The waiting ones show the revision they wait for; their spec is untouched.
    wanted = template_revision(build_template(NEW))
    for name in ("busy", "recent"):
        assert api.objects[name]["metadata"]["annotations"][ANNOTATION_TEMPLATE_REVISION] == wanted
    assert ("idle", False, True) in holds.held
    assert ("busy", False, False) in holds.held

    # The call ends: the next look rolls it. Nothing else is read or written.
    holds.busy.clear()
    api.patches.clear()
    counts = await roller.pass_pending()
    assert counts.names == {"busy": "roll", "recent": "wait"}
    assert [name for name, _ in api.patches] == ["busy"]
    assert _spec(api, "busy")["resources"]["limits"]["cpu"] == "2"


async def test_immediate_rolls_everything_and_never_touches_nothing() -> None:
    api, holds = FakeKubeApi(), Holds()
    api.add(_tns("busy"))
    holds.busy.add("busy")
    assert (await _rollout(api, "never", holds).pass_all()).names == {"busy": "leave"}
    assert api.patches == []
    counts = await _rollout(api, "immediate", holds).pass_all()
    assert counts.names == {"busy": "roll"}
    assert holds.held == [("busy", True, True)]  # forced: the runtime closes its channel after
    assert _spec(api, "busy")["resources"]["limits"]["cpu"] == "2"


async def test_a_write_between_read_and_patch_makes_it_wait() -> None:
    api, _holds = FakeKubeApi(), Holds()
    api.add(_tns("a"))

    class Racing(Holds):
        @contextlib.asynccontextmanager
        async def __call__(self, name: str, *, force: bool) -> AsyncIterator[Hold]:
            # Another replica stamps activity while this one decides.
            await api.patch_tns(
                name, {"metadata": {"annotations": {ANNOTATION_LAST_ACTIVITY: _stamp_ago(0)}}}
            )
            async with super().__call__(name, force=force) as held:
                yield held

    roller = _rollout(api, holds=Racing())
    assert (await roller.pass_all()).names == {"a": "wait"}
    assert _spec(api, "a")["resources"]["limits"]["cpu"] == "1"
    assert roller.pending == {"a"}


async def test_an_old_replica_leaves_what_a_newer_one_wrote() -> None:
    api = FakeKubeApi()
    started = time.time() - 120
    obj = _tns("a")
    obj["metadata"]["annotations"][ANNOTATION_TEMPLATE_AT] = rollout.stamp(started + 60)
    api.add(obj)
    roller = _rollout(api, started=started)
    assert (await roller.pass_all()).names == {}
    assert api.patches == []


async def test_a_call_notices_a_stale_namespace_and_a_wake_takes_the_template_along() -> None:
    api = FakeKubeApi()
    api.add(_tns("live"))
    asleep = api.add(_tns("asleep", suspended=True))
    asleep["status"] = {"phase": "Ready", "pod": "p"}
    roller = _rollout(api)
    control = NamespaceControl(api, NEW, roller)  # type: ignore[arg-type]
    await control.ensure(_ref_for(api, "live"))
    assert roller.pending == {"live"}
    # Waking is an idle moment: the one patch both wakes it and moves it.
    patch = roller.on_wake(api.objects["asleep"])
    assert patch["spec"] == build_template(NEW)
    assert "resourceVersion" not in patch["metadata"]
    assert roller.on_wake(api.objects["live"] | {"metadata": {"name": "x", "labels": {}}}) == {}


def _ref_for(api: FakeKubeApi, name: str) -> NamespaceRef:
    """A NamespaceRef whose object_name the fake resolves to ``name``."""
    ref = NamespaceRef("ws-1", name)
    api.objects[ref.object_name] = api.objects[name]
    return ref


async def test_wait_ready_wakes_a_stale_suspended_namespace_on_the_new_template() -> None:
    api = FakeKubeApi()
    ref = NamespaceRef("ws-1", "asleep")
    obj = _tns("asleep", suspended=True)
    obj["metadata"]["name"] = ref.object_name
    obj["metadata"]["generation"] = 1
    obj["status"] = {"phase": "Ready", "pod": "p", "observedGeneration": 1}
    api.add(obj)
    control = NamespaceControl(api, NEW, _rollout(api))  # type: ignore[arg-type]
    assert await control.wait_ready(ref) == "p"
    [(_, wake)] = api.patches
    assert wake["spec"]["suspended"] is False
    assert wake["spec"]["resources"]["limits"]["cpu"] == "2"
    assert ANNOTATION_LAST_ACTIVITY in wake["metadata"]["annotations"]


# ── the runtime's hold ───────────────────────────────────────────────────────


class FakeSession:
    """What the hold reads of an agent session; ``running`` is what the agent reports."""

    def __init__(self) -> None:
        self.requests: dict[int, object] = {}
        self.live_processes: set[int] = set()
        self.running: list[int] = []
        self.closed = False

    async def call(self, message: Obj) -> Obj:
        assert message == {"op": "proc_list"}
        return {"processes": [{"pid": p, "argv": ["sleep"], "running": True} for p in self.running]}


class FakeChannel:
    def __init__(self) -> None:
        self.session = FakeSession()
        self.open = True

    async def close(self) -> None:
        self.open = False


def _runtime() -> KubernetesRuntime:
    return KubernetesRuntime(NEW, FakeKubeApi())  # type: ignore[arg-type]


async def test_the_hold_keeps_calls_off_and_closes_the_channel_once_rolled() -> None:
    runtime = _runtime()
    channel = FakeChannel()
    runtime._channels["a"] = channel  # type: ignore[assignment]
    async with runtime._hold("a", force=False) as held:
        assert not held.busy
        assert "a" not in runtime._channels  # no new call finds the old pod's channel
        assert runtime._locks["a"].locked()  # and none opens a new one meanwhile
        held.rolled = True
    assert not channel.open
    assert not runtime._locks["a"].locked()


async def test_the_hold_is_busy_while_a_call_runs_and_puts_the_channel_back() -> None:
    runtime = _runtime()
    channel = FakeChannel()
    channel.session.requests[1] = object()
    runtime._channels["a"] = channel  # type: ignore[assignment]
    async with runtime._hold("a", force=False) as held:
        assert held.busy
    assert runtime._channels["a"] is channel
    assert channel.open
    # A call waiting for its pod holds the lock: busy too, and nothing is taken.
    channel.session.requests.clear()
    async with runtime._locks["a"]:
        async with runtime._hold("a", force=False) as held:
            assert held.busy
    # Background processes started through this replica count as a call, while the agent
    # still reports them.
    channel.session.live_processes.add(7)
    channel.session.running = [7]
    async with runtime._hold("a", force=False) as held:
        assert held.busy
    channel.session.running = []
    async with runtime._hold("a", force=False) as held:
        assert not held.busy


async def test_a_forced_hold_waits_for_nothing() -> None:
    runtime = _runtime()
    channel = FakeChannel()
    channel.session.requests[1] = object()
    runtime._channels["a"] = channel  # type: ignore[assignment]
    lock = runtime._locks.setdefault("a", asyncio.Lock())
    async with lock:  # even a call waiting for its pod
        async with runtime._hold("a", force=True) as held:
            assert not held.busy
            held.rolled = True
    assert not channel.open
    assert "a" not in runtime._channels
