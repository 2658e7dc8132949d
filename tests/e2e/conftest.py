"""e2e fixtures: only under ``make e2e`` (TROVE_TEST_BACKEND=kubernetes), against $KUBECONFIG."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster import Cluster, backend, cluster
from tests.support.server import LiveServer, start_server


@pytest.fixture(autouse=True)
def _only_under_make_e2e() -> None:
    if backend() != "kubernetes":
        pytest.skip("e2e tests run under `make e2e` (TROVE_TEST_BACKEND=kubernetes)")


@pytest.fixture
def k8s() -> Cluster:
    return cluster()


@pytest.fixture(scope="module")
def k8s_server() -> Iterator[LiveServer]:
    if backend() != "kubernetes":
        pytest.skip("e2e tests run under `make e2e` (TROVE_TEST_BACKEND=kubernetes)")
    with start_server() as live:
        yield live
