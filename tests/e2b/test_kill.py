"""``Sandbox.kill`` frees the namespace: sandbox, files and storage gone, ``namespace.deleted``
emitted; a namespace trove-sdk made is never deleted by an E2B call."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import NotFoundException

from tests.e2b import WAIT_S
from tests.support.sdk import client
from tests.support.server import LiveServer
from trove_core.runtime import NamespaceRef


def events_of(server: LiveServer, namespace: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{server.base_url}/v1/workspaces/{server.workspace_id}/events",
        params={"namespace": namespace, "limit": 200},
        headers={"Authorization": f"Bearer {server.workspace_key}"},
        timeout=WAIT_S,
    )
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


def known(server: LiveServer, namespace: str) -> bool:
    """Whether the server still has the namespace's row (``find`` reads only the database)."""
    return asyncio.run(server.ctx.namespaces.find(server.workspace_id, namespace)) is not None


def storage_left(server: LiveServer, namespace: str) -> bool:
    """The runtime's own view of what is left of the namespace."""
    ref = NamespaceRef(workspace_id=server.workspace_id, name=namespace)
    if os.environ.get("TROVE_TEST_BACKEND") == "kubernetes":
        from kubernetes.client.exceptions import ApiException

        from tests.support.cluster import cluster, wait_for
        from trove_core.crd import GROUP, PLURAL, VERSION

        k8s = cluster()

        def gone() -> bool:
            try:
                k8s.custom.get_namespaced_custom_object(
                    GROUP, VERSION, k8s.namespace, PLURAL, ref.object_name
                )
            except ApiException as exc:
                return exc.status == 404
            return False

        # The operator releases its finalizer, then garbage collection takes pod and PVC.
        wait_for(gone, what=f"TroveNamespace {ref.object_name} deleted")
        return False
    runtime: Any = server.ctx.runtime
    warm = f"{ref.workspace_id}.{ref.name}" in runtime.sandboxes.warm
    return bool(warm or runtime.has_storage(ref))


def test_kill_removes_the_sandbox_and_its_storage(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    sbx.files.write("big/data.bin", b"x" * 100_000)
    sbx.commands.run("sleep 600", background=True)
    if os.environ.get("TROVE_TEST_BACKEND") != "kubernetes":
        assert storage_left(e2b_env, sbx.sandbox_id)
    sbx.kill()
    with pytest.raises(NotFoundException):
        Sandbox.connect(sbx.sandbox_id)
    assert not known(e2b_env, sbx.sandbox_id)
    assert not storage_left(e2b_env, sbx.sandbox_id)
    types = [e["type"] for e in events_of(e2b_env, sbx.sandbox_id)]
    assert types.count("namespace.deleted") == 1
    # Nothing brings it back: the id stays dead, and no call provisioned it again.
    with pytest.raises(NotFoundException):
        Sandbox.connect(sbx.sandbox_id)
    assert not known(e2b_env, sbx.sandbox_id)


def test_kill_of_an_adopted_trove_namespace_keeps_it(e2b_env: LiveServer, namespace: str) -> None:
    with client(e2b_env, namespace) as trove:
        trove.write("mine.txt", "trove-sdk made me")
    adopted = Sandbox.connect(namespace)
    assert adopted.files.read("mine.txt") == "trove-sdk made me"
    adopted.kill()
    assert Sandbox.kill(namespace) is False
    with client(e2b_env, namespace) as trove:
        assert trove.read("mine.txt") == "trove-sdk made me"
    assert known(e2b_env, namespace)
    assert "namespace.deleted" not in [e["type"] for e in events_of(e2b_env, namespace)]
    if os.environ.get("TROVE_TEST_BACKEND") != "kubernetes":
        runtime: Any = e2b_env.ctx.runtime
        assert runtime.has_storage(NamespaceRef(workspace_id=e2b_env.workspace_id, name=namespace))


def test_a_kill_cut_off_before_the_deletion_is_finished_by_the_sweeper(e2b_env: LiveServer) -> None:
    from trove_api.e2b.records import SandboxRecords

    sbx = Sandbox.create()
    sbx.files.write("left.txt", "behind")
    # What a server that died right after writing the tombstone leaves: killed, namespace there.
    SandboxRecords(e2b_env.ctx.db).set(sbx.sandbox_id, state="killed")
    assert known(e2b_env, sbx.sandbox_id)
    # The server's sweeper runs every e2b_sweep_interval_s: polled, no timing asserted.
    for _ in range(400):
        if not known(e2b_env, sbx.sandbox_id):
            break
        time.sleep(0.05)
    assert not known(e2b_env, sbx.sandbox_id)
    assert not storage_left(e2b_env, sbx.sandbox_id)
    assert [e["type"] for e in events_of(e2b_env, sbx.sandbox_id)].count("namespace.deleted") == 1


def test_a_killed_sandboxs_snapshots_stay_usable(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    sbx.files.write("state.txt", "snapped")
    snap = sbx.create_snapshot()
    sbx.kill()
    assert not known(e2b_env, sbx.sandbox_id)
    restored = Sandbox.create(template=snap.snapshot_id)
    try:
        assert restored.files.read("state.txt") == "snapped"
    finally:
        restored.kill()
        Sandbox.delete_snapshot(snap.snapshot_id)
