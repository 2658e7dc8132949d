"""Logging: one JSON object per line (or plain text), each carrying the request id in flight."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")


class _InFlight:
    """The request a context serves. Every copy of that context (a task or thread the request
    starts, a callback asyncio arms while it runs, the next request a connection starts from
    inside it) shares this one object, so ending it clears the id in all of them at once."""

    __slots__ = ("request_id",)

    def __init__(self, request_id: str) -> None:
        self.request_id: str | None = request_id

    def end(self, _task: object = None) -> None:
        self.request_id = None


_in_flight: contextvars.ContextVar[_InFlight | None] = contextvars.ContextVar("trove_request", default=None)


def begin_request(request_id: str) -> None:
    """Tag the log lines of the running task with ``request_id`` until the task ends.

    Ended when the task ends, not when the app returns: a crash is logged after that, by
    Starlette's outermost error middleware and by uvicorn, and those lines are this request's.
    """
    in_flight = _InFlight(request_id)
    _in_flight.set(in_flight)
    task = asyncio.current_task()
    if task is not None:
        task.add_done_callback(in_flight.end)


def current_request_id() -> str | None:
    in_flight = _in_flight.get()
    return in_flight.request_id if in_flight is not None else None


# LogRecord attributes that are not "extra" fields passed by the caller.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def detached_task(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """A task that outlives the request which happens to start it (a pod's channel reader, a
    housekeeper). ``create_task`` copies the caller's context, so its log lines would carry
    that first request's id for ever; this one carries none."""
    context = contextvars.copy_context()
    context.run(_in_flight.set, None)
    return asyncio.create_task(coro, name=name, context=context)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None:
                entry[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """Route every logger (ours, uvicorn's, kopf's) through one handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our middleware writes the access log (with the request id); uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
