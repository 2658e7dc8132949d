"""The sandbox template of a TroveNamespace and its revision: shared by the API (which rolls a
changed template out to existing namespaces) and the operator (which reports the revision).

The template is the part of the spec that comes from the deployment's sandbox settings and
may change for an existing namespace. Not in it: the namespace's identity (workspaceId,
namespace), its state (suspended), its own egress rules (egressBlocked/egressDns, set per
sandbox by E2B's update_network), its deletion policy, and storage: a claim's size and class
are fixed when it is made, so a new value applies to new namespaces only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

TEMPLATE_FIELDS: Final = (
    "image",
    "imagePullPolicy",
    "resources",
    "maxProcesses",
    "egress",
    "idleSuspendSeconds",
)

# On a TroveNamespace the API manages: the template revision it wants the namespace on. Set at
# creation and by each rollout (also while the namespace waits for an idle moment); the
# operator shows it as status.desiredTemplateRevision next to the one the pod runs. Not under
# ``trove.dev/``: kopf keeps its own state there and so leaves every ``trove.dev/`` annotation
# out of the changes it reports, and the operator's handler must see this one change.
ANNOTATION_TEMPLATE_REVISION: Final = "rollout.trove.dev/revision"
# When the API replica whose settings wrote the template started: during a rolling upgrade a
# replica never rolls back what a replica started after it wrote (see rollout.newer_elsewhere).
ANNOTATION_TEMPLATE_AT: Final = "trove.dev/template-at"


def template_of(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The template fields of a spec (those it has: the API server fills in the CRD's defaults)."""
    return {key: spec[key] for key in TEMPLATE_FIELDS if key in spec}


def template_revision(spec: Mapping[str, Any]) -> str:
    """A short stable digest of the spec's template: equal templates, equal revisions."""
    canonical = json.dumps(template_of(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]
