"""The canonical CRD: structural, printer columns, and defaults that agree with the operator's spec."""

from pathlib import Path
from typing import Any

import yaml

from trove_core import crd
from trove_operator.spec import TroveNamespaceSpec, TroveWarmPoolSpec

CRD = Path(__file__).parents[2] / "crds" / "trovenamespaces.trove.dev.yaml"
POOL_CRD = Path(__file__).parents[2] / "crds" / "trovewarmpools.trove.dev.yaml"


def _load() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return loaded


def test_coordinates_match_trove_core() -> None:
    doc = _load()
    assert doc["metadata"]["name"] == f"{crd.PLURAL}.{crd.GROUP}"
    assert doc["spec"]["group"] == crd.GROUP
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (crd.KIND, crd.PLURAL, [crd.SHORT_NAME])
    (version,) = doc["spec"]["versions"]
    assert version["name"] == crd.VERSION
    assert version["subresources"] == {"status": {}}
    columns = [c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["NAMESPACE", "PHASE", "POD", "REVISION", "DESIRED", "AGE"]


def _defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """Apply the schema's defaults to an empty object, as the API server does."""
    out: dict[str, Any] = {}
    for key, prop in (schema.get("properties") or {}).items():
        if prop.get("type") == "object" and "default" in prop:
            out[key] = _defaults(prop)
        elif "default" in prop:
            out[key] = prop["default"]
    return out


def test_schema_defaults_agree_with_the_spec_model() -> None:
    schema = _load()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    defaulted = {"workspaceId": "ws-1", "namespace": "a", **_defaults(schema)}
    model = TroveNamespaceSpec.model_validate({"workspaceId": "ws-1", "namespace": "a"})
    assert TroveNamespaceSpec.model_validate(defaulted) == model


def test_no_cel_rules_for_v1_20() -> None:
    assert "x-kubernetes-validations" not in CRD.read_text()


def test_pool_crd_coordinates_and_defaults() -> None:
    doc: dict[str, Any] = yaml.safe_load(POOL_CRD.read_text())
    assert doc["metadata"]["name"] == f"{crd.POOL_PLURAL}.{crd.GROUP}"
    assert (doc["spec"]["names"]["kind"], doc["spec"]["names"]["plural"]) == (crd.POOL_KIND, crd.POOL_PLURAL)
    (version,) = doc["spec"]["versions"]
    assert version["name"] == crd.VERSION
    schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert TroveWarmPoolSpec.model_validate(_defaults(schema)) == TroveWarmPoolSpec()


def test_pool_template_schema_is_the_namespace_schema() -> None:
    """A pool's template must default exactly as a namespace does, or no namespace would fit it."""
    pool_doc: dict[str, Any] = yaml.safe_load(POOL_CRD.read_text())
    template = pool_doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]
    namespace = _load()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]
    for key in ("image", "imagePullPolicy", "storage", "resources"):
        assert template["template"]["properties"][key] == namespace[key]


def test_current_phase_only_for_the_observed_generation() -> None:
    def obj(phase: str, generation: int | None, observed: int | None) -> dict[str, Any]:
        status: dict[str, Any] = {"phase": phase}
        if observed is not None:
            status["observedGeneration"] = observed
        return {"metadata": {} if generation is None else {"generation": generation}, "status": status}

    assert crd.current_phase(obj("Ready", 2, 2)) == "Ready"
    assert crd.current_phase(obj("Ready", 3, 2)) is None  # a newer spec, not yet acted on
    assert crd.current_phase(obj("Ready", 1, None)) is None
    assert crd.current_phase(obj("Pending", None, None)) == "Pending"
    assert crd.current_phase({"metadata": {"generation": 1}}) is None
