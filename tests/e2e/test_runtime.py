"""The Kubernetes runtime through the API: provisioning, suspend/resume keeps files, isolation, 503."""

from __future__ import annotations

import secrets

import httpx

from tests.support.cluster import Cluster, wait_for
from tests.support.sdk import client
from tests.support.server import LiveServer, start_server
from trove_core.crd import GROUP, PLURAL, VERSION, child_names, object_name


def test_first_use_creates_the_namespace_object(k8s: Cluster, k8s_server: LiveServer) -> None:
    namespace = "rt-" + secrets.token_hex(4)
    with client(k8s_server, namespace) as trove:
        uid, cwd, home = trove.exec("id -u; pwd; echo $HOME").split()
        assert (cwd, home) == ("/", "/workspace")
        assert int(uid) >= 1_000_000_000  # a uid of the pod's own, not the image's
    name = object_name(k8s_server.workspace_id, namespace)
    obj = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL, name)
    assert obj["spec"]["namespace"] == namespace
    assert obj["status"]["phase"] == "Ready"


def test_suspend_and_resume_keep_files(k8s: Cluster, k8s_server: LiveServer) -> None:
    namespace = "rt-" + secrets.token_hex(4)
    name = object_name(k8s_server.workspace_id, namespace)
    with client(k8s_server, namespace) as trove:
        trove.write("workspace/notes/keep.txt", "survives")
        k8s.custom.patch_namespaced_custom_object(
            GROUP, VERSION, k8s.namespace, PLURAL, name, {"spec": {"suspended": True}}
        )

        def stopped() -> bool:
            obj = k8s.custom.get_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL, name)
            status = obj.get("status") or {}
            return status.get("phase") == "Suspended" and status.get("pod") is None

        wait_for(stopped, what="Suspended")
        # The next call wakes it (spec.suspended back to false) and waits for Ready.
        assert trove.read_text("notes/keep.txt") == "survives"
        assert trove.exec("cat workspace/notes/keep.txt") == "survives"


def test_namespaces_are_isolated(k8s: Cluster, k8s_server: LiveServer) -> None:
    one, two = "iso-" + secrets.token_hex(4), "iso-" + secrets.token_hex(4)
    with client(k8s_server, one) as a, client(k8s_server, two) as b:
        b.write("workspace/secret.txt", "only-b")
        out = a.exec(
            "ls /workspace; find / -name secret.txt -not -path '/proc/*' 2>/dev/null; "
            "test -e /var/run/secrets/kubernetes.io/serviceaccount/token && echo HAS-TOKEN; "
            # The kubelet gives PID 1 the API server's address even without service links.
            "eval $(tr '\\0' '\\n' < /proc/1/environ | grep '^KUBERNETES_SERVICE_[HP]O[SR]T='); "
            "curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "
            "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/default/pods"
        )
    assert "secret.txt" not in out
    assert "HAS-TOKEN" not in out
    # Anonymous at best: the API server refuses a pod without a token.
    assert out.strip().endswith(("401", "403"))


def test_not_ready_answers_503_with_retry_after(k8s: Cluster) -> None:
    with start_server(k8s_sandbox_image="trove-does-not-exist:0", k8s_ready_timeout_s=3) as live:
        response = httpx.post(
            f"{live.base_url}/v1/exec",
            json={"command": "true"},
            headers={"Authorization": f"Bearer {live.workspace_key}", "X-Namespace": "broken"},
            timeout=30,
        )
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "not ready" in response.json()["detail"]


def test_pod_loss_mid_session_reconnects(k8s: Cluster, k8s_server: LiveServer) -> None:
    namespace = "rt-" + secrets.token_hex(4)
    name = object_name(k8s_server.workspace_id, namespace)
    with client(k8s_server, namespace) as trove:
        trove.write("workspace/a.txt", "A")
        k8s.core.delete_namespaced_pod(child_names(name).pod, k8s.namespace, grace_period_seconds=0)

        def answers() -> bool:
            try:
                return trove.exec("cat workspace/a.txt") == "A"
            except Exception:
                return False

        wait_for(answers, timeout=90, interval=1, what="exec after the pod was replaced")


def test_exec_file_size_limit_holds_in_the_pod(k8s: Cluster) -> None:
    """TROVE_EXEC_FILE_MB reaches the command's shell as a hard limit it cannot lift."""
    with start_server(exec_file_mb=1) as live, client(live, "fsize-" + secrets.token_hex(3)) as trove:
        assert trove.exec("ulimit -f; ulimit -Hf") == "1024\n1024\n"
        result = trove.exec_detailed("head -c 2000000 /dev/zero > /workspace/big.bin")
        assert result.exit_code != 0
        assert trove.exec("stat -c %s /workspace/big.bin") == f"{1024 * 1024}\n"
        lifted = trove.exec_detailed("ulimit -f unlimited && echo lifted")
        assert lifted.exit_code != 0
        assert "lifted" not in lifted.stdout
