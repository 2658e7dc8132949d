"""kill -9 mid-burst on PostgreSQL: the same scenario and checks as on SQLite (tests/contract)."""

from __future__ import annotations

import shutil

from tests.contract.test_crash_consistency import kill_mid_burst_and_check
from tests.support.server import make_data_dir


def test_kill_9_mid_burst_on_postgresql_loses_no_event(database_url: str) -> None:
    data_dir = make_data_dir()
    try:
        kill_mid_burst_and_check(data_dir, database_url)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
