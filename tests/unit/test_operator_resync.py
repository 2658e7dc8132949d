"""Which namespaces the idle check re-syncs: only those in transit; the rest wait for the slow pass."""

from __future__ import annotations

from typing import Any

import pytest

from trove_operator.reconciler import settled


def _body(phase: str | None, generation: int = 2, observed: int | None = 2) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": {"name": "n", "generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_body("Ready"), True),
        (_body("Suspended"), True),
        (_body("Pending"), False),
        (_body("Failed"), False),
        (_body(None, observed=None), False),  # the operator has not reported yet
        (_body("Ready", generation=3, observed=2), False),  # a newer spec, not yet acted on
        (_body("Suspended", generation=3, observed=None), False),
    ],
)
def test_only_resting_states_for_the_current_spec_are_settled(body: dict[str, Any], expected: bool) -> None:
    assert settled(body) is expected


def test_an_object_without_status_or_generation_is_in_transit() -> None:
    assert settled({"metadata": {"name": "n"}}) is False
