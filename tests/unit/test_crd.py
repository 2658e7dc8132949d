"""The canonical CRD: structural, printer columns, and defaults that agree with the operator's spec."""

from pathlib import Path
from typing import Any

import yaml

from trove_core import crd
from trove_operator.spec import TroveNamespaceSpec

CRD = Path(__file__).parents[2] / "crds" / "trovenamespaces.trove.dev.yaml"


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
    assert columns == ["NAMESPACE", "PHASE", "POD", "AGE"]


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
