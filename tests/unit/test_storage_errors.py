"""Which errors count as "storage full" (507) in the error root; the live paths are in tests/storage."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from trove_api.problems import storage_full_cause
from trove_core.diskspace import DiskReserve
from trove_core.errors import StorageFullError


class _PgDiskFull(Exception):
    sqlstate = "53100"  # what psycopg's errors.DiskFull carries


def _wrapped(inner: BaseException) -> RuntimeError:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise RuntimeError("while committing") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full")),
        OperationalError("INSERT", {}, _PgDiskFull("could not extend file")),
        _wrapped(OSError(errno.ENOSPC, "No space left on device")),
        StorageFullError("full"),
    ],
)
def test_storage_full_is_recognised_through_wrappers(error: BaseException) -> None:
    assert storage_full_cause(error) is not None


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EACCES, "Permission denied"),
        OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked")),
        IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")),
        RuntimeError("boom"),
    ],
)
def test_other_errors_stay_internal(error: BaseException) -> None:
    assert storage_full_cause(error) is None


def test_a_reserve_larger_than_the_free_space_refuses() -> None:
    DiskReserve(Path("/"), 1).check()
    huge = DiskReserve(Path("/"), 1 << 62)
    with pytest.raises(StorageFullError):
        huge.check()
    assert DiskReserve.off().reserve_bytes == 0
    DiskReserve.off().check(1 << 62)
