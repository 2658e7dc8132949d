"""Log lines of a long-lived task started inside a request carry no request id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from trove_api.logs import RequestIdFilter, detached_task, request_id_var

log = logging.getLogger("trove.test.log_context")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RequestIdFilter())
        self.ids: list[object] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.ids.append(getattr(record, "request_id", "missing"))


@pytest.fixture
def records() -> Iterator[_Records]:
    handler = _Records()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield handler
    log.removeHandler(handler)


def test_a_detached_task_logs_without_the_starting_requests_id(records: _Records) -> None:
    async def reader() -> None:
        log.info("a line from a pod's channel reader")

    async def request() -> None:
        request_id_var.set("req_first")
        # A plain task copies the request's context (this is what leaked): ...
        await asyncio.create_task(reader())
        # ... a detached one starts from a context without it.
        await detached_task(reader(), name="test-reader")
        log.info("the request's own line")

    asyncio.run(request())
    assert records.ids == ["req_first", None, "req_first"]
