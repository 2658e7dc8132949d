"""Scale-out fixtures: a real PostgreSQL server and two `trove-server serve` replicas on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import database_url, postgres
from tests.support.replicas import Replicas, start_replicas

__all__ = ["database_url", "postgres"]


@pytest.fixture(scope="module")
def replicas(database_url: str) -> Iterator[Replicas]:
    """Two replicas started together on the module's fresh database and one shared data dir."""
    with start_replicas(database_url, 2) as started:
        yield started
