"""The namespaces-per-workspace cap (issue 14 item 6): 409 namespace_limit_reached, nothing created.

Creations race on purpose (many at once through the official async client): the count and
the insert share one transaction, so the cap holds exactly. Two replicas on PostgreSQL race
the same way in tests/scaleout/test_namespace_limit.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from trove_sdk import TroveError as SdkError

from tests.storage.disks import events
from tests.support.sdk import async_client, client
from tests.support.server import LiveServer, start_server

CAP = 3


@pytest.fixture(scope="module")
def capped() -> Iterator[LiveServer]:
    with start_server(max_namespaces_per_workspace=CAP, snapshot_daily=False) as live:
        yield live


async def _write(server: LiveServer, namespace: str) -> int:
    async with async_client(server, namespace) as sdk:
        try:
            await sdk.write("hello.txt", namespace)
        except SdkError as exc:
            return exc.status_code or 0
        return 200


def test_racing_creations_stop_exactly_at_the_cap(capped: LiveServer) -> None:
    names = [f"race-{number}" for number in range(12)]

    async def race() -> list[int]:
        return list(await asyncio.gather(*(_write(capped, name) for name in names)))

    statuses = asyncio.run(race())
    assert sorted(statuses) == [200] * CAP + [409] * (len(names) - CAP), statuses
    created = [name for name, status in zip(names, statuses, strict=True) if status == 200]
    assert sum(len(events(capped, name, "namespace.created")) for name in names) == CAP

    # The answer is a stable problem; every kind of first change is refused alike, nothing made.
    headers = {"Authorization": f"Bearer {capped.workspace_key}", "X-Namespace": "one-too-many"}
    with httpx.Client(base_url=capped.base_url, headers=headers, timeout=30) as http:
        answer = http.post("/write", json={"path": "a.txt", "content": "a"})
        assert answer.status_code == 409
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["code"] == "namespace_limit_reached"
        assert http.put("/files/a.bin", content=b"a").json()["code"] == "namespace_limit_reached"
        assert http.post("/v1/exec", json={"command": "true"}).json()["code"] == "namespace_limit_reached"
    with client(capped, "one-too-many") as sdk:
        with pytest.raises(SdkError) as refused:
            sdk.create_snapshot("x")
        assert refused.value.status_code == 409
        assert list(sdk.list_dir()) == []
    assert events(capped, "one-too-many", "namespace.created") == []

    # The namespaces that exist keep working.
    with client(capped, created[0]) as sdk:
        sdk.write("more.txt", "more")
        assert sdk.exec("cat workspace/hello.txt") == created[0]
