"""Kubernetes end to end: an idle namespace is suspended and wakes on the next call; snapshots via S3.

A real operator subprocess (idle checks every 2 s, tests/support/cluster.py), the API with
``TROVE_RUNTIME=kubernetes`` and, for snapshots, a real SeaweedFS S3 process on loopback: the
API streams the pod's tarball into the bucket, so the sandbox pod never sees S3 credentials.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
import tarfile
import time
from typing import Any

from trove_sdk import TroveClient

from tests.e2e.test_operator import get_pod, get_tns
from tests.support.cluster import Cluster, wait_for
from tests.support.s3 import S3Server
from tests.support.sdk import client
from tests.support.server import start_server
from trove_api.runtimes.kubernetes.namespaces import activity_stamp
from trove_core.crd import ANNOTATION_LAST_ACTIVITY, GROUP, PLURAL, VERSION, child_names, object_name

IDLE_S = 3
# Pods start slowly on a busy 2-core node: wait for Ready as long as the API allows (503 after).
PATIENT = {"k8s_ready_timeout_s": 29}
BLOB = bytes(range(256)) * 64 + os.urandom(4096) + b"\x00\xff\x00"


def suspended(k8s: Cluster, name: str) -> bool:
    obj = get_tns(k8s, name)
    status = obj.get("status") or {}
    return (
        obj["spec"].get("suspended") is True
        and status.get("phase") == "Suspended"
        and status.get("observedGeneration") == obj["metadata"]["generation"]
        and status.get("pod") is None
        and get_pod(k8s, name) is None
    )


def activity(k8s: Cluster, name: str) -> str | None:
    stamp: str | None = (get_tns(k8s, name)["metadata"].get("annotations") or {}).get(
        ANNOTATION_LAST_ACTIVITY
    )
    return stamp


def tree(trove: TroveClient) -> list[tuple[str, bool, int | None]]:
    return sorted(
        (f.path, f.is_dir, None if f.is_dir else f.size_bytes) for f in trove.list_dir(recursive=True)
    )


def fill(trove: TroveClient) -> None:
    trove.write("workspace/notes/a.txt", "alpha\n")
    trove.write("workspace/deep/er/nested.txt", "nested\n")
    trove.upload("workspace/bin/blob.bin", BLOB)
    trove.exec(
        "mkdir -p workspace/empty/dir && printf '#!/bin/sh\\necho run\\n' > workspace/x.sh"
        " && chmod 755 workspace/x.sh"
    )


def check_filled(trove: TroveClient) -> None:
    assert trove.read_text("workspace/notes/a.txt") == "alpha\n"
    assert trove.read_text("workspace/deep/er/nested.txt") == "nested\n"
    assert trove.read_bytes("workspace/bin/blob.bin") == BLOB
    assert trove.exec("test -d workspace/empty/dir && workspace/x.sh") == "run\n"


# ── idle suspend / resume ─────────────────────────────────────────────────────


def test_idle_namespace_is_suspended_and_the_next_call_wakes_it(k8s: Cluster) -> None:
    namespace = "idle-" + secrets.token_hex(4)
    with start_server(k8s_idle_suspend_s=IDLE_S, **PATIENT) as live, client(live, namespace) as trove:
        name = object_name(live.workspace_id, namespace)
        fill(trove)
        before = tree(trove)
        obj = get_tns(k8s, name)
        assert obj["spec"]["idleSuspendSeconds"] == IDLE_S  # the API's setting reached the CR
        assert obj["spec"]["suspended"] is False
        first_pod = get_pod(k8s, name).metadata.uid
        pvc_uid = k8s.core.read_namespaced_persistent_volume_claim(
            child_names(name).pvc, k8s.namespace
        ).metadata.uid

        # The API records activity on the object (how the operator judges idleness).
        wait_for(lambda: activity(k8s, name), what="the last-activity annotation")

        # Nobody but the operator's idle timer sets spec.suspended here.
        wait_for(
            lambda: suspended(k8s, name), timeout=120, interval=1, what="the idle namespace to be suspended"
        )
        assert f"suspending {k8s.namespace}/{name} after" in k8s.operator_log.read_text()
        pvc = k8s.core.read_namespaced_persistent_volume_claim(child_names(name).pvc, k8s.namespace)
        assert (pvc.metadata.uid, pvc.status.phase) == (pvc_uid, "Bound")

        # The next call wakes it transparently: exec first (no retry path), then reads.
        assert trove.exec("cat workspace/notes/a.txt workspace/deep/er/nested.txt") == "alpha\nnested\n"
        check_filled(trove)
        assert tree(trove) == before
        obj = get_tns(k8s, name)
        assert obj["spec"]["suspended"] is False
        assert obj["status"]["phase"] == "Ready"
        assert get_pod(k8s, name).metadata.uid != first_pod


def test_waking_counts_as_activity(k8s: Cluster) -> None:
    """Woken after a long idle spell, a namespace must not be suspended again at once for its old stamp."""
    namespace = "wake-" + secrets.token_hex(4)
    with start_server(**PATIENT) as live, client(live, namespace) as trove:
        name = object_name(live.workspace_id, namespace)
        trove.write("workspace/w.txt", "woken")
        # As after a long idle spell: an old activity stamp, suspended.
        stale = {"metadata": {"annotations": {ANNOTATION_LAST_ACTIVITY: "2000-01-01T00:00:00Z"}}}
        k8s.custom.patch_namespaced_custom_object(
            GROUP, VERSION, k8s.namespace, PLURAL, name, stale | {"spec": {"suspended": True}}
        )
        wait_for(lambda: suspended(k8s, name), what="Suspended")
        called = activity_stamp(time.time() - 1)
        assert trove.exec("cat workspace/w.txt") == "woken"
        stamp = activity(k8s, name)
        assert stamp is not None
        assert stamp >= called  # fixed-width UTC stamps compare as strings

        def operator_saw_it() -> bool:
            status = get_tns(k8s, name).get("status") or {}
            return status.get("phase") == "Ready" and (status.get("lastActivity") or "") >= called

        wait_for(operator_saw_it, what="status.lastActivity of the woken namespace")


# ── snapshots through a real S3 server ────────────────────────────────────────


def test_snapshot_round_trip_through_s3(k8s: Cluster, s3: S3Server) -> None:
    namespace = "snap-" + secrets.token_hex(4)
    bucket = "trove-e2e-" + secrets.token_hex(4)
    with start_server(**s3.settings(bucket), **PATIENT) as live, client(live, namespace) as trove:
        name = object_name(live.workspace_id, namespace)
        fill(trove)
        before = tree(trove)
        snap = trove.create_snapshot(label="e2e")

        # The tarball is an object in the bucket, under the workspace and namespace.
        s3c: Any = s3.client()
        listed = s3c.list_objects_v2(Bucket=bucket)
        key = f"snapshots/{live.workspace_id}/{namespace}/{snap.snapshot_id}.tar.gz"
        assert [(o["Key"], o["Size"]) for o in listed.get("Contents", [])] == [(key, snap.size_bytes)]
        stored = s3c.get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(stored))) as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
            blob = tar.extractfile(members["bin/blob.bin"])
            assert blob is not None
            assert blob.read() == BLOB
        assert {"notes/a.txt", "deep/er/nested.txt", "empty/dir", "x.sh"} <= set(members)

        # Change, delete and add; the restore puts back exactly the snapshot's tree.
        trove.write("workspace/notes/a.txt", "changed\n")
        trove.delete("workspace/deep")
        trove.delete("workspace/bin/blob.bin")
        trove.write("workspace/new.txt", "not in the snapshot\n")
        trove.exec("rm -r workspace/empty && chmod 600 workspace/x.sh")
        assert tree(trove) != before
        assert trove.restore_snapshot(snap.snapshot_id) == 4
        check_filled(trove)
        assert tree(trove) == before

        # The sandbox never sees S3 credentials: the API moves the bytes.
        environ = trove.exec("cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; env")
        pod = k8s.api.sanitize_for_serialization(get_pod(k8s, name))
    spec_text = json.dumps(pod)
    for secret in (s3.access_key_id, s3.secret_access_key, s3.endpoint_url, bucket):
        assert secret not in environ
        assert secret not in spec_text
    assert "AWS_" not in environ
    assert "TROVE_S3" not in environ
    for container in pod["spec"]["containers"]:
        assert "envFrom" not in container
        assert not [e for e in container.get("env", []) if "valueFrom" in e]
    assert not [v for v in pod["spec"].get("volumes", []) if "secret" in v or "projected" in v]
