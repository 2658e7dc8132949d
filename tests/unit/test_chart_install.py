"""An install that works or fails loudly (issue 16, item 4), via `helm template` and a real server.

values-bare.yaml (host-path volumes, no registry, no DNS), the API's data-volume check whatever
the storage class, the `helm test` pod (its script run here against a real local server), the
webhook private-address value. On a cluster: tests/e2e/test_helm_bare.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.helm import CHART, Doc, env_of, find, helm_run, render
from tests.support.sdk import admin, client
from tests.support.server import start_server
from tests.unit.test_chart_values import render_notes

BARE = CHART / "values-bare.yaml"
SQLITE = ("--set", "postgresql.enabled=false", "--set", "api.replicas=1")
HELM_TEST_SCRIPT = CHART / "files" / "helm-test.py"


def init_containers(docs: list[Doc]) -> dict[str, dict[str, Any]]:
    spec = find(docs, "Deployment", "-api")["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec.get("initContainers", [])}


def test_bare_values_lint_and_need_no_registry() -> None:
    helm_run("lint", str(CHART), "--strict", "--namespace", "trove", "-f", str(BARE))
    docs = render("-f", str(BARE))
    assert not [d for d in docs if "minio" in d["metadata"]["name"]]
    images = [
        c
        for d in docs
        if d["kind"] in ("Deployment", "Pod", "Job")
        for c in (d.get("spec", {}).get("template", {}).get("spec") or d["spec"])["containers"]
    ]
    assert images
    assert {c["image"] for c in images} == {"trove:0.1.0"}
    assert {c["imagePullPolicy"] for c in images} == {"Never"}
    env = env_of(find(docs, "Deployment", "-api"))
    assert env["TROVE_K8S_IMAGE_PULL_POLICY"] == "Never"
    assert env["TROVE_K8S_SANDBOX_IMAGE"] == "trove-sandbox:0.1.0"
    assert env["TROVE_SNAPSHOT_STORE"] == "directory"
    assert "volume-permissions" in init_containers(docs)


def test_bare_values_are_what_the_readme_says() -> None:
    readme = (CHART.parents[1] / "README.md").read_text()
    assert "-f charts/trove/values-bare.yaml --wait" in readme
    assert "helm test trove -n trove" in readme
    assert "helm install trove charts/trove -n trove --create-namespace --wait" in readme


@pytest.mark.parametrize("chown", [True, False])
def test_the_data_volume_is_checked_whatever_the_storage_class(chown: bool) -> None:
    found = init_containers(render(*SQLITE, "--set", f"volumePermissions.enabled={str(chown).lower()}"))
    check = found["check-data-volume"]
    # The check runs as the API itself (the pod's non-root uid), so it sees what the API will see.
    assert "runAsUser" not in check["securityContext"]
    assert "/data is not writable" not in check["command"][2]  # the message names the owner found
    assert "is not writable by uid" in check["command"][2]
    assert "volumePermissions.enabled=true" in check["command"][2]
    assert list(found) == (["volume-permissions", "check-data-volume"] if chown else ["check-data-volume"])
    if chown:
        root = found["volume-permissions"]["securityContext"]
        assert root["runAsUser"] == 0
        assert root["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}


def test_chown_is_the_default_and_postgresql_needs_no_api_volume() -> None:
    assert list(init_containers(render(*SQLITE))) == ["volume-permissions", "check-data-volume"]
    assert list(init_containers(render())) == ["wait-for-postgresql"]
    external = render("-f", str(CHART / "ci" / "01-postgres-replicas-values.yaml"))
    assert init_containers(external) == {}


def test_the_check_fails_on_a_volume_the_uid_cannot_write() -> None:
    """The check's own shell, run as a non-root uid against a root-owned directory (as host-path makes)."""
    script = init_containers(render(*SQLITE))["check-data-volume"]["command"][2]
    # Under /tmp itself: pytest's tmp_path sits below 0700 directories the API's uid cannot cross.
    parent = Path(tempfile.mkdtemp(prefix="trove-check-data-"))
    try:
        parent.chmod(0o755)
        volume = parent / "data"
        volume.mkdir(mode=0o755)
        as_api = ["setpriv", "--reuid", "10001", "--regid", "10001", "--clear-groups"]
        if os.geteuid() != 0:
            volume.chmod(0o555)  # not root: a directory this process cannot write stands in
            as_api = []
        argv = [*as_api, "sh", "-c", script.replace("/data", str(volume))]
        refused = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert refused.returncode == 1
        assert "is not writable by uid" in refused.stderr
        assert "set volumePermissions.enabled=true" in refused.stderr
        volume.chmod(0o777)
        assert subprocess.run(argv, capture_output=True, text=True, check=False).returncode == 0
    finally:
        shutil.rmtree(parent)


def test_helm_test_pod_goes_through_the_api_service() -> None:
    docs = render()
    pod = find(docs, "Pod", "-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [container] = pod["spec"]["containers"]
    assert container["command"][:3] == ["python3", "-I", "-c"]
    assert container["command"][3] == HELM_TEST_SCRIPT.read_text()
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert find(docs, "Service", "-api")["metadata"]["name"] == "t-trove-api"
    assert env["TROVE_URL"] == "http://$(T_TROVE_API_SERVICE_HOST):$(T_TROVE_API_SERVICE_PORT)"
    assert env["TROVE_ADMIN_KEY"] == {"secretKeyRef": {"name": "t-trove-admin-key", "key": "admin-key"}}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False


def run_helm_test_script(url: str, admin_key: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "TROVE_URL": url, "TROVE_ADMIN_KEY": admin_key}
    return subprocess.run(
        [sys.executable, "-I", "-c", HELM_TEST_SCRIPT.read_text()],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_helm_test_script_writes_and_execs_through_a_real_server() -> None:
    with start_server() as live:
        done = run_helm_test_script(live.base_url, live.admin_key)
        assert done.returncode == 0, done.stderr
        assert "OK: wrote and read back a file through exec in namespace helm-test" in done.stdout
        # The key it minted is revoked again, and the file it wrote is gone.
        with admin(live) as adm:
            assert "helm-test" not in [k.name for k in adm.list_keys()]
        with client(live, "helm-test") as sdk:
            assert sdk.exec("ls workspace") == ""
        # A wrong admin key fails with the step named.
        refused = run_helm_test_script(live.base_url, "trove-sk-admin-" + "x" * 43)
        assert refused.returncode == 1
        assert "FAIL admin key: GET /v1/me -> 401" in refused.stderr


def test_webhook_private_addresses_are_a_chart_value() -> None:
    assert env_of(find(render(), "Deployment", "-api"))["TROVE_WEBHOOK_ALLOW_PRIVATE"] == "false"
    on = render("--set", "api.webhooks.allowPrivate=true")
    assert env_of(find(on, "Deployment", "-api"))["TROVE_WEBHOOK_ALLOW_PRIVATE"] == "true"


def test_notes_name_both_crds_and_helm_test(tmp_path: Path) -> None:
    notes = render_notes(tmp_path)
    assert "kubectl delete crd trovenamespaces.trove.dev trovewarmpools.trove.dev" in notes
    assert "helm test t --namespace trove" in notes
