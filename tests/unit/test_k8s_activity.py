"""The Kubernetes runtime's activity stamps: their format and how often they reach the CR."""

from __future__ import annotations

import datetime as dt

import pytest

from trove_api.runtimes.kubernetes.namespaces import activity_stamp
from trove_api.runtimes.kubernetes.runtime import ACTIVITY_FLUSH_S, activity_flush_s
from trove_core.crd import ANNOTATION_LAST_ACTIVITY
from trove_operator.reconciler import idle_for


@pytest.mark.parametrize(
    ("limit", "every"), [(0, ACTIVITY_FLUSH_S), (3600, ACTIVITY_FLUSH_S), (120, 30), (3, 0.75)]
)
def test_activity_reaches_the_cr_well_within_the_idle_limit(limit: int, every: float) -> None:
    assert activity_flush_s(limit) == every


def test_the_operator_reads_the_stamp_the_api_writes() -> None:
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 900_000, tzinfo=dt.UTC)
    stamp = activity_stamp(at.timestamp())
    assert stamp == "2026-01-02T03:04:05Z"
    body = {"metadata": {"annotations": {ANNOTATION_LAST_ACTIVITY: stamp}}}
    assert idle_for(body, at + dt.timedelta(seconds=100)) == pytest.approx(100.9)
