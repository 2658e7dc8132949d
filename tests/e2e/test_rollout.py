"""A changed sandbox template reaches existing namespaces (issue 16, item 3): the idle one gets
a new pod at once with its files, the busy one only after its call, which is not cut.

Two runtimes stand for the API before and after a ``helm upgrade`` that changes
``sandbox.resources.limits.cpu``: ``before`` creates the namespaces, ``after`` (the new
settings, ``TROVE_K8S_ROLLOUT=idle``) runs the long call and the rollout passes. The passes are
driven here, not by the background loop, and only over the namespaces this test noticed: the
test namespace is shared with other tests' objects.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from tests.e2e.test_operator_metrics import scrape, value
from tests.support.cluster import Cluster, wait_for_async
from tests.support.server import make_data_dir
from trove_api.runtimes.kubernetes.namespaces import build_template
from trove_api.runtimes.kubernetes.runtime import KubernetesRuntime
from trove_core.crd import GROUP, PLURAL, VERSION, child_names
from trove_core.runtime import ExecSpec, NamespaceRef
from trove_core.settings import Settings
from trove_core.template import template_revision

NEW_CPU_LIMIT = "1500m"  # the default is 1: a change the locally built image survives


def _script(script: str, timeout_s: float = 30) -> ExecSpec:
    return ExecSpec(script=script, stdin=None, timeout_s=timeout_s, output_limit=1 << 20)


def _tns(k8s: Cluster, ns: NamespaceRef) -> dict[str, Any]:
    obj: dict[str, Any] = k8s.custom.get_namespaced_custom_object(
        GROUP, VERSION, k8s.namespace, PLURAL, ns.object_name
    )
    return obj


def _pod(k8s: Cluster, ns: NamespaceRef) -> Any:
    obj = _tns(k8s, ns)
    return k8s.core.read_namespaced_pod(
        child_names(ns.object_name, obj["metadata"].get("annotations")).pod, k8s.namespace
    )


def _outdated(k8s: Cluster) -> float:
    """The operator's count of namespaces whose pod runs an older template than wanted."""
    return value(scrape(k8s), "trove_operator_namespaces_outdated") or 0


def _rolled_and_ready(k8s: Cluster, ns: NamespaceRef, revision: str) -> bool:
    status = _tns(k8s, ns).get("status") or {}
    return status.get("phase") == "Ready" and status.get("templateRevision") == revision


async def test_the_idle_namespace_rolls_now_and_the_busy_one_after_its_call(k8s: Cluster) -> None:
    base = {**k8s.settings_overrides(), "k8s_rollout": "idle", "k8s_rollout_idle_s": 3}
    before = KubernetesRuntime.from_settings(Settings(data_dir=make_data_dir(), **base))
    new_settings = Settings(data_dir=make_data_dir(), **base, k8s_cpu_limit=NEW_CPU_LIMIT)
    after = KubernetesRuntime.from_settings(new_settings)
    new_revision = template_revision(build_template(new_settings))
    ws = "ws_rollout_" + secrets.token_hex(4)
    idle, busy = NamespaceRef(ws, "idle"), NamespaceRef(ws, "busy")
    try:
        for ns in (idle, busy):
            result = await before.exec(ns, _script(f"echo {ns.name}-kept > /workspace/keep.txt"))
            assert result.exit_code == 0, result.stderr
        old_revision = _tns(k8s, idle)["status"]["templateRevision"]
        assert old_revision != new_revision
        old_uid = {ns.name: _pod(k8s, ns).metadata.uid for ns in (idle, busy)}
        await before.aclose()

        # The busy namespace: a call through the new API that lasts until the test releases it.
        call = asyncio.create_task(
            after.exec(
                busy,
                _script(
                    "touch /workspace/started; "
                    "while [ ! -e /workspace/release ]; do sleep 0.2; done; cat /workspace/keep.txt",
                    timeout_s=600,
                ),
            )
        )

        async def started() -> bool:  # a second call alongside, on the same pod
            probe = await after.exec(busy, _script("test -e /workspace/started"))
            return probe.exit_code == 0

        while not await started():
            assert not call.done(), call.result()
            await asyncio.sleep(0.5)
        await after.provision(idle)  # a read by the new API: it notices the old template
        assert after.rollout.pending == {idle.object_name, busy.object_name}
        await asyncio.sleep(new_settings.k8s_rollout_idle_s)  # the idle one's last use is older

        counts = await after.rollout.pass_pending()
        assert counts.names == {idle.object_name: "roll", busy.object_name: "wait"}

        # The idle one: a new pod on the new template, its files kept.
        await wait_for_async(
            lambda: _rolled_and_ready(k8s, idle, new_revision), what="the idle namespace rolled", timeout=120
        )
        pod = _pod(k8s, idle)
        assert pod.metadata.uid != old_uid["idle"]
        assert pod.spec.containers[0].resources.limits["cpu"] == NEW_CPU_LIMIT
        kept = await after.exec(idle, _script("cat /workspace/keep.txt"))
        assert kept.stdout.decode().strip() == "idle-kept"

        # The busy one, still mid-call and otherwise quiet for longer than the idle limit (so
        # only the call in flight holds it): not touched; its status shows old vs new.
        await asyncio.sleep(new_settings.k8s_rollout_idle_s + 1)
        assert not call.done()
        counts = await after.rollout.pass_pending()
        assert counts.names[busy.object_name] == "wait"
        assert _pod(k8s, busy).metadata.uid == old_uid["busy"]
        assert _tns(k8s, busy)["spec"]["resources"]["limits"]["cpu"] == "1"
        await wait_for_async(
            lambda: (_tns(k8s, busy).get("status") or {}).get("desiredTemplateRevision") == new_revision,
            what="the busy namespace's status showing the wanted revision",
            timeout=60,
        )
        assert _tns(k8s, busy)["status"]["templateRevision"] == old_revision
        waiting = await wait_for_async(lambda: _outdated(k8s), what="the busy one counted as outdated")

        # The call ends on its own pod, whole; then the busy one rolls too.
        released = await after.exec(busy, _script("touch /workspace/release"))
        assert released.exit_code == 0
        result = await call
        assert (result.exit_code, result.stdout.decode().strip()) == (0, "busy-kept")

        async def rolled_busy() -> bool:
            counts = await after.rollout.pass_pending()
            return counts.names.get(busy.object_name) == "roll"

        deadline = time.monotonic() + 60
        while not await rolled_busy():
            assert time.monotonic() < deadline, "the busy namespace was never rolled after its call"
            await asyncio.sleep(1)
        await wait_for_async(
            lambda: _rolled_and_ready(k8s, busy, new_revision), what="the busy namespace rolled", timeout=120
        )
        assert _pod(k8s, busy).metadata.uid != old_uid["busy"]
        await wait_for_async(lambda: _outdated(k8s) < waiting, what="the busy one no longer outdated")
        kept = await after.exec(busy, _script("cat /workspace/keep.txt"))
        assert kept.stdout.decode().strip() == "busy-kept"
        assert _tns(k8s, busy)["status"]["desiredTemplateRevision"] == new_revision
        assert after.rollout.pending == set()
    finally:
        for ns in (idle, busy):
            await after.deprovision(ns)
        await after.aclose()
        await before.aclose()
