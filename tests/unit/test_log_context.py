"""A log line carries the id of the request it belongs to, or none: never a finished request's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from trove_api.logs import RequestIdFilter, begin_request, detached_task

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
        begin_request("req_first")
        # A plain task copies the request's context (this is what leaked): ...
        await asyncio.create_task(reader())
        # ... a detached one starts from a context without it.
        await detached_task(reader(), name="test-reader")
        log.info("the request's own line")

    asyncio.run(request())
    assert records.ids == ["req_first", None, "req_first"]


def test_copies_of_a_finished_requests_context_log_without_its_id(records: _Records) -> None:
    # asyncio arms a connection's reader (and uvicorn starts a pipelined request) from inside
    # the request in flight: those callbacks run later in a copy of its context.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        later = loop.create_future()

        async def request() -> None:
            begin_request("req_done")
            log.info("inside")
            loop.call_soon(lambda: loop.call_soon(lambda: (log.info("after"), later.set_result(None))))

        await asyncio.create_task(request())
        await later

    asyncio.run(main())
    assert records.ids == ["req_done", None]
