"""Daily auto snapshots and the pruner, triggered with `trove-server snapshots run-daily|prune`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.support.cluster import runtime_env
from tests.support.sdk import client
from tests.support.server import LiveServer, start_server
from trove_api.stores.tables import snapshots

AUTO_ID = re.compile(r"auto-[0-9a-f]{16}")


@pytest.fixture(scope="module")
def quiet_server() -> Iterator[LiveServer]:
    """A server of its own, with the background scheduler off: only the command runs jobs."""
    with start_server(snapshot_daily=False) as live:
        yield live


def _jobs(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROVE_")}
    env["TROVE_DATA_DIR"] = str(server.data_dir)
    env.update(runtime_env(server.settings))  # `make e2e`: the same Kubernetes runtime
    command = Path(sys.executable).with_name("trove-server")
    return subprocess.run(
        [str(command), "snapshots", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _age(server: LiveServer, snapshot_id: str, created_at: str) -> None:
    with server.ctx.db.write() as conn:
        conn.execute(update(snapshots).where(snapshots.c.id == snapshot_id).values(created_at=created_at))


def test_daily_snapshots_changed_namespaces_once(quiet_server: LiveServer, namespace: str) -> None:
    changed, unchanged = namespace + "-changed", namespace + "-same"
    with client(quiet_server, changed) as a, client(quiet_server, unchanged) as b:
        a.write("workspace/work.txt", "v1")
        b.write("workspace/work.txt", "v1")
        manual = b.create_snapshot(label="mine")

        first = _jobs(quiet_server, "run-daily", "--day", "2026-05-02")
        assert first.returncode == 0, first.stderr
        created = AUTO_ID.findall(first.stdout)
        listed = a.list_snapshots()
        assert [s.snapshot_id for s in listed] == created  # exactly one, for the changed namespace
        assert listed[0].label == "auto-daily-2026-05-02"
        assert [s.snapshot_id for s in b.list_snapshots()] == [manual.snapshot_id]

        again = _jobs(quiet_server, "run-daily", "--day", "2026-05-02")
        assert "already done" in again.stdout
        assert AUTO_ID.search(again.stdout) is None
        next_day = _jobs(quiet_server, "run-daily", "--day", "2026-05-03")
        assert AUTO_ID.search(next_day.stdout) is None  # nothing changed since

        a.exec("echo more >> workspace/work.txt")
        third = _jobs(quiet_server, "run-daily", "--day", "2026-05-04")
        assert len(AUTO_ID.findall(third.stdout)) == 1
        assert a.list_snapshots()[0].label == "auto-daily-2026-05-04"

        # Restoring the auto snapshot brings the state of that day back.
        assert a.restore_snapshot(listed[0].snapshot_id) == 1
        assert a.read_text("workspace/work.txt") == "v1"


def test_prune_removes_only_old_auto_snapshots(quiet_server: LiveServer, namespace: str) -> None:
    with client(quiet_server, namespace) as trove:
        trove.write("workspace/f.txt", "x")
        manual = trove.create_snapshot(label="keep forever")
        trove.write("workspace/f.txt", "y")
        ran = _jobs(quiet_server, "run-daily", "--day", "2026-06-01")
        ids = AUTO_ID.findall(ran.stdout)
        mine = [s.snapshot_id for s in trove.list_snapshots() if s.snapshot_id in ids]
        assert len(mine) == 1
        trove.exec("echo z > workspace/f.txt")
        _jobs(quiet_server, "run-daily", "--day", "2026-06-02")
        fresh = [
            s
            for s in trove.list_snapshots()
            if s.snapshot_id.startswith("auto-") and s.snapshot_id != mine[0]
        ]
        assert len(fresh) == 1
        # Forty days old: the first auto snapshot and the manual one; the second stays recent.
        _age(quiet_server, mine[0], "2020-01-01T00:00:00.000000Z")
        _age(quiet_server, manual.snapshot_id, "2020-01-01T00:00:00.000000Z")

        pruned = _jobs(quiet_server, "prune", "--day", "2026-06-03")
        assert pruned.returncode == 0, pruned.stderr
        assert mine[0] in pruned.stdout
        left = {s.snapshot_id for s in trove.list_snapshots()}
        assert left == {manual.snapshot_id, fresh[0].snapshot_id}
        assert "already done" in _jobs(quiet_server, "prune", "--day", "2026-06-03").stdout
        assert "snapshot(s) pruned" in _jobs(quiet_server, "prune", "--day", "2026-06-03", "--force").stdout
        assert manual.snapshot_id in {s.snapshot_id for s in trove.list_snapshots()}
