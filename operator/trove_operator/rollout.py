"""Pure rollout decisions: when a changed sandbox template reaches an existing namespace's pod.

The template a namespace should run is its spec (the API writes it from ``TROVE_K8S_*`` at
creation; the operator brings the specs of API-made namespaces in line with the chart's current
``sandbox.*`` values, ``TROVE_OPERATOR_SANDBOX_TEMPLATE``). A pod built from an older template
(or by an operator that built pods differently) is *outdated*; the policy says when it is
replaced: ``immediate`` at once, ``idle`` at the namespace's next idle moment (no activity
recorded for ``operator_rollout_idle_s``: the API re-stamps a namespace with a call in flight at
every activity flush, so a busy one never qualifies), ``never`` not at all (the status shows it
behind; its next pod, after a suspend or a crash, is built from the new template). The PVC is
never touched, so files are kept.
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args

from pydantic import ValidationError

from trove_core.crd import LABEL_MANAGED_BY
from trove_operator import builders
from trove_operator.spec import TroveNamespaceSpec

Manifest = dict[str, Any]
Policy = Literal["idle", "immediate", "never"]
POLICIES: tuple[str, ...] = get_args(Policy)

# Only namespaces the API made follow the chart's template; hand-made ones keep their spec.
MANAGED_BY_API = "trove-api"
# The spec fields the API sets from its settings that can change under a running namespace.
# Not storage: a PVC's size and class are fixed when it is made.
TEMPLATE_FIELDS = ("image", "imagePullPolicy", "resources", "maxProcesses", "egress", "idleSuspendSeconds")
# Rollout states (status.rollout).
CURRENT = "Current"  # the pod (if any) runs the spec's template
WAITING = "Waiting"  # policy idle: replaced at the namespace's next idle moment
HELD = "Held"  # policy never: left as it is
ROLLING = "Rolling"  # the outdated pod is being replaced


class TemplateError(ValueError):
    """``TROVE_OPERATOR_SANDBOX_TEMPLATE`` is not a template the operator can apply."""


def parse_template(text: str) -> Manifest:
    """The configured template (a JSON object of ``TEMPLATE_FIELDS``), checked at start-up;
    empty text: no template, specs stay as they were made."""
    if not text.strip():
        return {}
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"TROVE_OPERATOR_SANDBOX_TEMPLATE is not JSON: {exc}") from exc
    if not isinstance(fields, dict):
        raise TemplateError("TROVE_OPERATOR_SANDBOX_TEMPLATE must be a JSON object")
    unknown = sorted(set(fields) - set(TEMPLATE_FIELDS))
    if unknown:
        raise TemplateError(f"TROVE_OPERATOR_SANDBOX_TEMPLATE: unknown fields {unknown}")
    try:
        TroveNamespaceSpec.model_validate({"workspaceId": "ws", "namespace": "ns", **fields})
    except ValidationError as exc:
        raise TemplateError(f"TROVE_OPERATOR_SANDBOX_TEMPLATE is invalid: {exc}") from exc
    return fields


def template_patch(body: Manifest, template: Manifest) -> Manifest:
    """The merge patch that brings an API-made namespace's spec to ``template`` ({} when it is
    there already, or the namespace is not the API's)."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    if not template or labels.get(LABEL_MANAGED_BY) != MANAGED_BY_API:
        return {}
    spec = body.get("spec") or {}
    return {key: value for key, value in template.items() if not _contains(spec.get(key), value)}


def _contains(have: Any, want: Any) -> bool:
    """Whether ``have`` already holds ``want`` (objects: every key of ``want``, as a merge
    patch would leave them)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_contains(have.get(k), v) for k, v in want.items())
    return bool(have == want)


def pod_revision(pod: Manifest | None, desired: Manifest, wanted: str) -> str | None:
    """The revision the live pod runs: ``wanted`` when it is current, else what it was stamped
    with (``unknown`` for pods older than the stamp); None without a pod."""
    if pod is None:
        return None
    if not outdated(pod, desired):
        return wanted
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(builders.ANNOTATION_TEMPLATE_REVISION) or "unknown")


def outdated(pod: Manifest, desired: Manifest) -> bool:
    """The pod was built from another spec than ``desired`` (its spec hash differs)."""
    have = ((pod.get("metadata") or {}).get("annotations") or {}).get(builders.ANNOTATION_SPEC_HASH)
    return bool(have != desired["metadata"]["annotations"][builders.ANNOTATION_SPEC_HASH])


def replace_now(policy: str, idle_s: float | None, quiet_s: float) -> bool:
    """Whether an outdated, running pod is replaced now. ``idle_s`` is how long the namespace
    has been without recorded activity (None: unknown, so not provably idle)."""
    if policy == "immediate":
        return True
    if policy == "idle":
        return idle_s is not None and idle_s >= quiet_s
    return False


def state(policy: str, pod: Manifest | None, is_outdated: bool) -> str:
    """status.rollout for a namespace whose live pod is ``pod``."""
    if pod is None or not is_outdated:
        return CURRENT
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return ROLLING
    return HELD if policy == "never" else WAITING


def due(body: Manifest, policy: str, idle_s: float | None, quiet_s: float) -> bool:
    """The idle check's question: does this namespace wait for an idle moment that has come?
    Read off the status alone, so namespaces that are current cost no API call."""
    if (body.get("spec") or {}).get("suspended"):
        return False
    status = body.get("status") or {}
    return status.get("rollout") == WAITING and replace_now(policy, idle_s, quiet_s)
