"""The operator's side of rollouts: the template revisions it reports, the CRD's columns for
them, and the chart value that picks the policy."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from tests.support.helm import env_of, find, render, render_error
from trove_api.runtimes.kubernetes.namespaces import build_tns
from trove_core.crd import GROUP, child_names
from trove_core.runtime import NamespaceRef
from trove_core.settings import Settings
from trove_core.template import ANNOTATION_TEMPLATE_REVISION, template_revision
from trove_operator import builders, lifecycle, reconciler

CRD = Path(__file__).parents[2] / "crds" / "trovenamespaces.trove.dev.yaml"
Obj = dict[str, Any]


class RecordingKube:
    """The one call ``report`` makes on a Ready namespace: the status patch."""

    def __init__(self) -> None:
        self.statuses: list[Obj] = []

    def patch_status(self, namespace: str, name: str, status: Obj) -> None:
        self.statuses.append(status)


def _body(settings: Settings, **status: Any) -> Obj:
    body = build_tns(settings, NamespaceRef("ws-1", "alice"))
    body["metadata"] |= {"namespace": "sb", "generation": 1, "uid": "u-1"}
    body["status"] = status
    return body


def _pod(body: Obj) -> Obj:
    meta = body["metadata"]
    spec = reconciler.parse_spec(body)
    pod = builders.build_pod(meta["name"], child_names(meta["name"]), spec)
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return pod


def _report(body: Obj, pod: Obj | None) -> Obj:
    kube = RecordingKube()
    meta = body["metadata"]
    spec = reconciler.parse_spec(body)
    reconciler.report(kube, body, spec, child_names(meta["name"]), None, pod)  # type: ignore[arg-type]
    [status] = kube.statuses
    return status


OLD, NEW = Settings(), Settings(k8s_cpu_limit="2")


def test_a_current_pod_runs_the_spec_revision() -> None:
    body = _body(OLD)
    status = _report(body, _pod(body))
    revision = template_revision(body["spec"])
    assert (status["templateRevision"], status["desiredTemplateRevision"]) == (revision, revision)


def test_while_the_pod_is_replaced_the_old_revision_shows() -> None:
    before = _body(OLD, templateRevision="old0000000")
    old_pod = _pod(before)
    after = _body(NEW, templateRevision="old0000000")  # the API patched the template
    status = _report(after, old_pod)
    assert status["templateRevision"] == "old0000000"
    assert status["desiredTemplateRevision"] == template_revision(after["spec"])
    # The new pod up: both agree.
    assert _report(after, _pod(after))["templateRevision"] == template_revision(after["spec"])
    # Terminating (deleted, not yet gone) is not current either.
    ending = copy.deepcopy(_pod(after))
    ending["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert _report(after, ending)["templateRevision"] == "old0000000"


def test_a_suspended_namespace_shows_the_revision_it_wakes_on() -> None:
    body = _body(NEW, templateRevision="old0000000")
    body["spec"]["suspended"] = True
    assert _report(body, None)["templateRevision"] == template_revision(body["spec"])


def test_the_api_wanted_revision_is_desired_while_the_spec_waits() -> None:
    body = _body(OLD)
    body["metadata"]["annotations"][ANNOTATION_TEMPLATE_REVISION] = "new0000000"
    status = _report(body, _pod(body))
    assert status["templateRevision"] == template_revision(body["spec"])
    assert status["desiredTemplateRevision"] == "new0000000"
    kube = RecordingKube()
    reconciler.show_desired(kube, body)  # type: ignore[arg-type]
    assert kube.statuses == [{"desiredTemplateRevision": "new0000000"}]
    # An object made with kubectl has no annotation: its spec is what it wants.
    del body["metadata"]["annotations"][ANNOTATION_TEMPLATE_REVISION]
    assert _report(body, _pod(body))["desiredTemplateRevision"] == template_revision(body["spec"])


def test_printer_columns_show_running_and_desired_revisions_from_the_status_schema() -> None:
    (version,) = yaml.safe_load(CRD.read_text())["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    status_schema = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for column, field in (("Revision", "templateRevision"), ("Desired", "desiredTemplateRevision")):
        assert columns[column]["jsonPath"] == f".status.{field}"
        assert "priority" not in columns[column]  # in plain `kubectl get tns`
        assert status_schema[field]["type"] == "string"  # not pruned by the API server
    status = _report(_body(OLD), _pod(_body(OLD)))
    assert set(status) <= set(status_schema)


@pytest.mark.parametrize(
    ("args", "expected"), [([], "idle"), (["--set", "sandbox.rollout=immediate"], "immediate")]
)
def test_the_chart_value_reaches_the_api(args: list[str], expected: str) -> None:
    env = env_of(find(render(*args), "Deployment", "-api"))
    assert env["TROVE_K8S_ROLLOUT"] == expected
    assert Settings.model_validate({"k8s_rollout": env["TROVE_K8S_ROLLOUT"]}).k8s_rollout == expected


def test_the_chart_refuses_an_unknown_policy() -> None:
    error = render_error("--set", "sandbox.rollout=later")
    assert "sandbox.rollout" in error
    assert '"idle", "immediate", "never"' in error


def test_kopf_reports_a_change_of_the_wanted_revision() -> None:
    """kopf leaves the annotations under its storage prefix (ours: trove.dev/) out of the
    state it diffs: a wanted revision there would never reach the status's handler."""
    settings = kopf.OperatorSettings()
    lifecycle.tune(settings)
    body = _body(OLD)
    body["metadata"]["annotations"][f"{GROUP}/kopf-managed"] = "yes"  # what kopf marks objects with
    essence = settings.persistence.diffbase_storage.build(body=kopf.Body(body))
    assert essence["metadata"]["annotations"] == {
        ANNOTATION_TEMPLATE_REVISION: body["metadata"]["annotations"][ANNOTATION_TEMPLATE_REVISION]
    }
