"""Two replicas creating namespaces of one workspace at once: the cap holds across them (PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.support.replicas import Replicas, start_replicas

CAP = 4


@pytest.fixture(scope="module")
def capped_replicas(database_url: str) -> Iterator[Replicas]:
    with start_replicas(database_url, 2, TROVE_MAX_NAMESPACES_PER_WORKSPACE=str(CAP)) as started:
        yield started


def test_racing_replicas_create_no_more_than_the_cap(capped_replicas: Replicas) -> None:
    replicas = capped_replicas
    names = [f"race-{number}" for number in range(16)]

    async def write(base_url: str, namespace: str) -> int:
        headers = {"Authorization": f"Bearer {replicas.workspace_key}", "X-Namespace": namespace}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:
            answer = await http.post("/write", json={"path": "a.txt", "content": namespace})
            if answer.status_code == 409:
                assert answer.json()["code"] == "namespace_limit_reached"
            return answer.status_code

    async def race() -> list[int]:
        # Alternate replicas, all at once.
        urls = [replicas[number % 2].base_url for number in range(len(names))]
        return list(await asyncio.gather(*(write(u, n) for u, n in zip(urls, names, strict=True))))

    statuses = asyncio.run(race())
    assert sorted(statuses) == [200] * CAP + [409] * (len(names) - CAP), statuses
