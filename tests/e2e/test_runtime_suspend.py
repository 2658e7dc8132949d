"""The Kubernetes runtime's own suspend (E2B's pause) and its egress rules re-applied at start-up."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.server import make_data_dir
from trove_api.runtimes.kubernetes.kubeapi import KubeApi, load_configuration
from trove_api.runtimes.kubernetes.runtime import KubernetesRuntime
from trove_core.crd import GROUP, PLURAL, VERSION
from trove_core.errors import SandboxNotReadyError
from trove_core.runtime import ExecSpec, NamespaceRef
from trove_core.settings import Settings


class CountingKubeApi(KubeApi):
    """The real client, counting the writes it sends to the real API server."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(load_configuration(settings), settings.k8s_namespace)
        self.patches: list[tuple[str, Any]] = []

    async def patch_tns(self, name: str, patch: Any) -> Any:
        self.patches.append((name, patch))
        return await super().patch_tns(name, patch)


def _runtime(k8s: Cluster) -> tuple[KubernetesRuntime, CountingKubeApi]:
    settings = Settings(data_dir=make_data_dir(), **k8s.settings_overrides())
    api = CountingKubeApi(settings)
    return KubernetesRuntime(settings, api), api


def _script(script: str) -> ExecSpec:
    return ExecSpec(script=script, stdin=None, timeout_s=30, output_limit=1 << 20)


def _tns(k8s: Cluster, ns: NamespaceRef) -> dict[str, Any]:
    obj: dict[str, Any] = k8s.custom.get_namespaced_custom_object(
        GROUP, VERSION, k8s.namespace, PLURAL, ns.object_name
    )
    return obj


async def test_suspend_gives_the_pod_back_and_the_next_call_wakes_it(k8s: Cluster) -> None:
    runtime, _ = _runtime(k8s)
    ns = NamespaceRef("ws_suspend_" + secrets.token_hex(4), "paused")
    try:
        await runtime.provision(ns)
        out = await runtime.exec(ns, _script("echo kept > /workspace/kept.txt; echo ok"))
        assert out.stdout.strip() == b"ok"
        first_pod = _tns(k8s, ns)["status"]["pod"]
        await runtime.suspend(ns)
        assert _tns(k8s, ns)["spec"]["suspended"] is True
        # The operator deletes the pod, as after the idle limit; the claim (the files) stays.
        wait_for(lambda: (_tns(k8s, ns).get("status") or {}).get("phase") == "Suspended", what="Suspended")
        pods = k8s.core.list_namespaced_pod(k8s.namespace).items
        assert first_pod not in {p.metadata.name for p in pods if p.metadata.deletion_timestamp is None}
        again = await runtime.exec(ns, _script("cat /workspace/kept.txt"))
        assert again.stdout.strip() == b"kept"
        assert _tns(k8s, ns)["spec"]["suspended"] is False
    finally:
        await runtime.deprovision(ns)
        await runtime.aclose()


async def test_rules_the_object_already_has_are_not_written_again(k8s: Cluster) -> None:
    runtime, api = _runtime(k8s)
    ns = NamespaceRef("ws_egress_" + secrets.token_hex(4), "rules")
    try:
        await runtime.provision(ns)
        await runtime.set_egress(ns, ["203.0.113.0/24"], dns=False)
        assert len(api.patches) == 1
        spec = _tns(k8s, ns)["spec"]
        assert (spec["egressBlocked"], spec["egressDns"]) == (["203.0.113.0/24"], False)
        # What a server start does for every E2B sandbox: the same rules again cost no write.
        await runtime.set_egress(ns, ["203.0.113.0/24"], dns=False)
        assert len(api.patches) == 1
        await runtime.set_egress(ns, ["203.0.113.0/24"], dns=True)
        assert len(api.patches) == 2
        assert _tns(k8s, ns)["spec"]["egressDns"] is True
    finally:
        await runtime.deprovision(ns)
        await runtime.aclose()


async def test_a_call_waiting_for_a_pod_that_gets_suspended_is_told_so(k8s: Cluster) -> None:
    # An image that does not exist: the pod never gets Ready, the call waits (up to 29 s).
    overrides = {**k8s.settings_overrides(), "k8s_ready_timeout_s": 29, "k8s_sandbox_image": "trove-nope:0"}
    runtime = KubernetesRuntime.from_settings(Settings(data_dir=make_data_dir(), **overrides))
    ns = NamespaceRef("ws_suspend_" + secrets.token_hex(4), "paused-while-waiting")
    try:
        await runtime.provision(ns)
        waiting = asyncio.create_task(runtime.exec(ns, _script("true")))
        # Suspended again and again: one that lands before the call wakes the object is undone
        # by that wake; the first after it ends the wait.
        for _ in range(40):
            if waiting.done():
                break
            k8s.custom.patch_namespaced_custom_object(
                GROUP, VERSION, k8s.namespace, PLURAL, ns.object_name, {"spec": {"suspended": True}}
            )
            await asyncio.wait([waiting], timeout=0.5)
        # Not the 29 s deadline's "not ready after": the suspension ends the wait.
        with pytest.raises(SandboxNotReadyError, match="suspended while this call waited"):
            await waiting
    finally:
        await runtime.deprovision(ns)
        await runtime.aclose()
