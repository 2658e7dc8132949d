"""Sandbox rollouts (issue 16, item 3): a changed sandbox template reaches existing namespaces,
an idle one's pod at once (files kept), a busy one's only after its call has ended.

As `helm upgrade` does it: the operator restarts with another ``TROVE_OPERATOR_SANDBOX_TEMPLATE``
(here ``maxProcesses`` 512 → 640, which changes the pod), and brings the specs of the namespaces
the API made to it; under ``TROVE_OPERATOR_ROLLOUT=idle`` each outdated pod is replaced once its
namespace has had no recorded activity for ``TROVE_OPERATOR_ROLLOUT_IDLE_S``.

The test runs its own operator on a namespace of its own (the shared one must not follow a
template) and its own API server, with short clocks: the API flushes activity every 10 s
(``k8s_idle_suspend_s`` 40 → a quarter of it), so a namespace with a call in flight is never
without a stamp younger than about 20 s; the operator's idle floor is 45 s. The templates set
``idleSuspendSeconds`` 0, so no namespace is suspended meanwhile (a suspend would also bring
the new template, and prove nothing). The busy call waits for a file the test writes only after
the idle namespace has been rolled, so the order does not depend on timing.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from trove_sdk import TroveClient

from tests.support.cluster import Cluster, release_finalizers, start_operator, wait_for
from tests.support.sdk import client
from tests.support.server import LiveServer, make_data_dir, start_server
from trove_api.runtimes.kubernetes.namespaces import activity_stamp
from trove_core.crd import ANNOTATION_LAST_ACTIVITY, GROUP, PLURAL, VERSION, object_name

OLD = {"maxProcesses": 512, "idleSuspendSeconds": 0}
NEW = {"maxProcesses": 640, "idleSuspendSeconds": 0}
ROLLOUT_ENV = {"TROVE_OPERATOR_ROLLOUT": "idle", "TROVE_OPERATOR_ROLLOUT_IDLE_S": "45"}
API = {"k8s_idle_suspend_s": 40, "exec_timeout_s": 400, "k8s_ready_timeout_s": 29}


class Rollout:
    """A namespace of the test's own, the operator watching it, and the API server using it."""

    def __init__(self, k8s: Cluster, namespace: str) -> None:
        self.k8s, self.namespace = k8s, namespace
        self.log = Path(tempfile.gettempdir()) / f"{namespace}-operator.log"
        self.operator: Any = None

    def run_operator(self, template: dict[str, Any]) -> None:
        """(Re)start the operator with ``template``, as a `helm upgrade` of `sandbox.*` restarts it."""
        self.stop_operator()
        env = ROLLOUT_ENV | {"TROVE_OPERATOR_SANDBOX_TEMPLATE": json.dumps(template)}
        self.operator = start_operator(self.k8s.kubeconfig, self.namespace, self.log, extra_env=env)

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.terminate()
            self.operator.wait(timeout=30)
            self.operator = None

    def tns(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.k8s.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return obj

    def pod(self, name: str) -> Any:
        pod_name = (self.tns(name).get("status") or {}).get("pod")
        if not pod_name:
            return None
        try:
            return self.k8s.core.read_namespaced_pod(pod_name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def pod_uid(self, name: str) -> str | None:
        pod = self.pod(name)
        return None if pod is None else str(pod.metadata.uid)

    def max_processes(self, pod: Any) -> str:
        [sandbox] = pod.spec.containers
        return str({e.name: e.value for e in sandbox.env}["TROVE_MAX_PROCESSES"])

    def settled_on(self, name: str, revision: str | None = None) -> dict[str, Any] | None:
        """The namespace Ready for its current spec, its pod on the spec's revision (``revision``
        when given)."""
        obj = self.tns(name)
        status = obj.get("status") or {}
        ok = (
            status.get("phase") == "Ready"
            and status.get("observedGeneration") == obj["metadata"]["generation"]
            and status.get("rollout") == "Current"
            and status.get("podRevision") == status.get("templateRevision")
            and (revision is None or status.get("templateRevision") == revision)
        )
        return obj if ok else None


@pytest.fixture
def rollout(k8s: Cluster) -> Iterator[Rollout]:
    namespace = f"{k8s.namespace}-roll"
    k8s.core.create_namespace({"metadata": {"name": namespace, "labels": {"trove.dev/test": "1"}}})
    rig = Rollout(k8s, namespace)
    try:
        yield rig
    finally:
        rig.stop_operator()
        release_finalizers(k8s.api, namespace)
        with contextlib.suppress(ApiException):
            k8s.core.delete_namespace(namespace, grace_period_seconds=0)


def sdk(live: LiveServer, namespace: str) -> TroveClient:
    # The busy call lasts minutes: the SDK's own 60 s read timeout would end it first.
    return TroveClient(api_key=live.workspace_key, namespace=namespace, base_url=live.base_url, timeout=600)


def test_a_changed_template_rolls_an_idle_namespace_now_and_a_busy_one_after_its_call(
    rollout: Rollout,
) -> None:
    rollout.run_operator(OLD)
    with start_server(k8s_namespace=rollout.namespace, **API) as live:
        quiet_ns, busy_ns = "quiet-" + secrets.token_hex(3), "busy-" + secrets.token_hex(3)
        quiet, busy = object_name(live.workspace_id, quiet_ns), object_name(live.workspace_id, busy_ns)
        with sdk(live, quiet_ns) as quiet_sdk, sdk(live, busy_ns) as busy_sdk, sdk(live, busy_ns) as go_sdk:
            quiet_sdk.write("workspace/keep.txt", "quiet files\n")
            busy_sdk.write("workspace/keep.txt", "busy files\n")
            for name in (quiet, busy):
                # The API made it with its own idle limit; the operator's template replaced that.
                obj = wait_for(lambda n=name: rollout.settled_on(n), timeout=120, what=f"{name} settled")
                assert obj["spec"]["maxProcesses"] == 512
                assert obj["spec"]["idleSuspendSeconds"] == 0
                assert rollout.max_processes(rollout.pod(name)) == "512"
            old_revision = rollout.tns(quiet)["status"]["templateRevision"]
            assert (
                rollout.tns(busy)["status"]["templateRevision"] == old_revision
            )  # one template, one revision
            quiet_pod, busy_pod = rollout.pod(quiet), rollout.pod(busy)
            pvcs = {n: rollout.tns(n)["status"]["pvc"] for n in (quiet, busy)}
            pvc_uids = {
                n: rollout.k8s.core.read_namespaced_persistent_volume_claim(
                    pvc, rollout.namespace
                ).metadata.uid
                for n, pvc in pvcs.items()
            }

            # A call that runs until the test lets it end.
            outcome: dict[str, Any] = {}

            def long_call() -> None:
                try:
                    outcome["out"] = busy_sdk.exec(
                        "while [ ! -e workspace/go ]; do sleep 1; done; cat workspace/keep.txt"
                    )
                except Exception as exc:  # reported by the assertion below
                    outcome["error"] = exc

            call = threading.Thread(target=long_call, name="busy-call")
            call.start()
            try:
                # The upgrade: the operator comes back with the new template.
                rollout.run_operator(NEW)

                def behind(name: str) -> dict[str, Any] | None:
                    obj = rollout.tns(name)
                    status = obj.get("status") or {}
                    moved = obj["spec"]["maxProcesses"] == 640
                    seen = status.get("observedGeneration") == obj["metadata"]["generation"]
                    return obj if moved and seen and status.get("templateRevision") != old_revision else None

                obj = wait_for(
                    lambda: behind(busy), timeout=120, what="the busy namespace's spec on the new template"
                )
                new_revision = obj["status"]["templateRevision"]

                # The idle namespace is rolled: a new pod on the new template, the same PVC.
                rolled = wait_for(
                    lambda: (
                        rollout.settled_on(quiet, new_revision)
                        and rollout.pod_uid(quiet) not in (None, quiet_pod.metadata.uid)
                    ),
                    timeout=240,
                    interval=1,
                    what="the idle namespace rolled to the new template",
                )
                assert rolled
                assert rollout.max_processes(rollout.pod(quiet)) == "640"
                assert (
                    f"replacing pod {rollout.namespace}/{quiet_pod.metadata.name} (rolling"
                    in rollout.log.read_text()
                )

                # The busy one still runs its call on the old pod, and says it waits.
                assert call.is_alive(), outcome
                status = rollout.tns(busy)["status"]
                assert (status["rollout"], status["podRevision"]) == ("Waiting", old_revision)
                assert rollout.pod_uid(busy) == busy_pod.metadata.uid
            finally:
                go_sdk.write("workspace/go", "")
                call.join(timeout=120)

            # The call ended normally, on the pod it started on.
            assert outcome == {"out": "busy files\n"}
            assert quiet_sdk.read_text("workspace/keep.txt") == "quiet files\n"

            # Once idle, the busy namespace is rolled as well, files kept.
            wait_for(
                lambda: (
                    rollout.settled_on(busy, new_revision)
                    and rollout.pod_uid(busy) not in (None, busy_pod.metadata.uid)
                ),
                timeout=240,
                interval=1,
                what="the busy namespace rolled after its call",
            )
            assert rollout.max_processes(rollout.pod(busy)) == "640"
            assert busy_sdk.read_text("workspace/keep.txt") == "busy files\n"
            for name, pvc in pvcs.items():
                live_pvc = rollout.k8s.core.read_namespaced_persistent_volume_claim(pvc, rollout.namespace)
                assert live_pvc.metadata.uid == pvc_uids[name]


def test_the_first_call_after_a_quiet_spell_stamps_activity_before_it_runs(k8s: Cluster) -> None:
    """Otherwise the operator would still see the old stamp until the API's next flush (up to a
    minute), and could roll (or suspend) the namespace under the call. An API process with no
    channel to the pod yet (here: restarted) stamps before it uses the pod."""
    namespace = "stamp-" + secrets.token_hex(3)
    data = make_data_dir()
    no_suspend = {"k8s_idle_suspend_s": 0, "k8s_ready_timeout_s": 29}  # the stamp alone is under test
    try:
        with start_server(data_dir=data, **no_suspend) as first, client(first, namespace) as trove:
            trove.write("workspace/a.txt", "a")
            name, key = object_name(first.workspace_id, namespace), first.workspace_key
        quiet = {"metadata": {"annotations": {ANNOTATION_LAST_ACTIVITY: "2020-01-01T00:00:00Z"}}}
        k8s.custom.patch_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL, name, quiet)
        with start_server(data_dir=data, **no_suspend) as restarted:
            called = activity_stamp(time.time() - 1)
            with TroveClient(api_key=key, namespace=namespace, base_url=restarted.base_url) as again:
                assert again.exec("cat workspace/a.txt") == "a"
                obj = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL, name)
                # Fixed-width UTC stamps compare as strings.
                assert obj["metadata"]["annotations"][ANNOTATION_LAST_ACTIVITY] >= called
    finally:
        shutil.rmtree(data, ignore_errors=True)
