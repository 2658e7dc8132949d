"""The event feed as `trove tail` and `trove events list` read it (E24, WIRE.md 3.5, 7.41–7.43)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.sdk import admin, cli_env, client, run_cli
from tests.support.server import LiveServer, start_server
from trove_api.events.log import Actor, record
from trove_core.clock import now_ts

ENVELOPE = {"id", "type", "api_version", "workspace_id", "namespace", "created_at", "actor", "data"}


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with start_server() as server:
        yield server


def _events(live: LiveServer, key: str | None = None, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{live.base_url}/v1/workspaces/{live.workspace_id}/events",
        params=params,
        headers={"Authorization": f"Bearer {key or live.workspace_key}"},
    )


def test_envelopes_and_data_keys(live: LiveServer, namespace: str) -> None:
    with client(live, namespace) as trove:
        trove.write("workspace/e.txt", "héllo")
        trove.upload("workspace/bin.dat", b"\x00\x01")
        trove.exec_detailed("echo out; echo err >&2; exit 3")
        trove.delete("workspace/e.txt")
    events = _events(live, namespace=namespace, limit=10).json()["events"]
    assert [e["type"] for e in events] == [
        "file.deleted",
        "exec.completed",
        "file.written",
        "file.written",
        "namespace.created",
    ]
    for event in events:
        assert set(event) == ENVELOPE
        assert event["id"].startswith("evt-")
        assert event["api_version"] == "2025-01-01"
        assert event["workspace_id"] == live.workspace_id
        assert event["namespace"] == namespace
        assert event["created_at"].endswith("Z")
        assert len(event["created_at"]) == 27
        assert event["actor"] == {"key_id": event["actor"]["key_id"], "key_name": "workspace"}
    deleted, execd, put, wrote, _ = events
    assert deleted["data"] == {"path": "workspace/e.txt"}
    assert wrote["data"] == {"path": "workspace/e.txt", "size_bytes": 6}
    assert put["data"] == {"path": "workspace/bin.dat", "size_bytes": 2}
    assert execd["data"]["command"] == "echo out; echo err >&2; exit 3"
    assert (execd["data"]["exit_code"], execd["data"]["stdout"], execd["data"]["stderr"]) == (
        3,
        "out\n",
        "err\n",
    )
    assert isinstance(execd["data"]["duration_ms"], int)


def test_failed_change_records_no_event(live: LiveServer, namespace: str) -> None:
    with client(live, namespace) as trove:
        trove.write("workspace/keep.txt", "x")
        with pytest.raises(Exception):
            trove.delete("workspace/missing.txt")
    types = [e["type"] for e in _events(live, namespace=namespace).json()["events"]]
    assert "file.deleted" not in types


def test_since_is_exclusive_in_both_forms(live: LiveServer, namespace: str) -> None:
    with client(live, namespace) as trove:
        for i in range(3):
            trove.write(f"workspace/s{i}.txt", "x")
    newest_first = _events(live, namespace=namespace, types="file.written").json()["events"]
    first = newest_first[-1]["created_at"]
    for since in (first, first.replace("Z", "+00:00")):
        page = _events(live, namespace=namespace, types="file.written", since=since).json()
        assert [e["data"]["path"] for e in page["events"]] == ["workspace/s2.txt", "workspace/s1.txt"]
    assert _events(live, namespace=namespace, since=newest_first[0]["created_at"]).json()["events"] == []
    assert _events(live, since="not a time").status_code == 400


def test_locked_key_sees_only_its_namespace(live: LiveServer, namespace: str) -> None:
    with admin(live) as a:
        locked = a.create_key("locked-reader", namespace=namespace).api_key
    with client(live, namespace) as trove:
        trove.write("workspace/l.txt", "x")
    with client(live, namespace + "-b") as trove:
        trove.write("workspace/l.txt", "x")
    seen = _events(live, key=locked, limit=1000).json()["events"]
    assert seen
    assert {e["namespace"] for e in seen} == {namespace}
    assert not any(e["type"].startswith("key.") or e["type"] == "workspace.created" for e in seen)
    assert _events(live, key=locked, namespace=namespace + "-b").status_code == 403
    admin_view = _events(live, key=live.admin_key, limit=1000).json()["events"]
    assert {namespace, namespace + "-b", None} <= {e["namespace"] for e in admin_view}


def test_other_workspace_is_403(live: LiveServer) -> None:
    response = httpx.get(
        f"{live.base_url}/v1/workspaces/ws-someoneelse/events",
        headers={"Authorization": f"Bearer {live.workspace_key}"},
    )
    assert response.status_code == 403


def test_cli_events_list_filters_and_cursor(live: LiveServer, namespace: str, tmp_path: Path) -> None:
    with client(live, namespace) as trove:
        for i in range(7):
            trove.write(f"workspace/c{i}.txt", "x")
        trove.exec("true")
    env = cli_env(live, tmp_path)
    base = ["events", "list", "--namespace", namespace, "--types", "file.written", "--limit", "5"]
    first = run_cli([*base, "--json"], env)
    assert first.returncode == 0, first.stderr
    page1 = [json.loads(line) for line in first.stdout.splitlines()]
    assert [e["data"]["path"] for e in page1] == [f"workspace/c{i}.txt" for i in range(6, 1, -1)]
    human = run_cli(base, env)
    assert "file.written" in human.stdout
    assert f"{namespace}" in human.stdout
    cursor = human.stderr.split("--cursor", 1)[1].split()[0]
    second = run_cli([*base, "--cursor", cursor, "--json"], env)
    page2 = [json.loads(line) for line in second.stdout.splitlines()]
    assert [e["data"]["path"] for e in page2] == ["workspace/c1.txt", "workspace/c0.txt"]
    assert not {e["id"] for e in page1} & {e["id"] for e in page2}
    assert "--cursor" not in run_cli([*base, "--cursor", cursor], env).stderr

    execs = run_cli(["events", "list", "--namespace", namespace, "--types", "exec.completed", "--json"], env)
    assert [json.loads(line)["type"] for line in execs.stdout.splitlines()] == ["exec.completed"]
    since = run_cli(
        ["events", "list", "--namespace", namespace, "--since", "1h", "--limit", "3", "--json"], env
    )
    # With --since the page is the oldest events after it (shown newest first).
    assert [json.loads(line)["type"] for line in since.stdout.splitlines()] == [
        "file.written",
        "file.written",
        "namespace.created",
    ]
    empty = run_cli(["events", "list", "--namespace", namespace + "-none"], env)
    assert empty.returncode == 0
    assert "(no events)" in empty.stderr


class _Tail:
    """`trove tail` as a background subprocess; its stdout lines land in a queue."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        trove = Path(sys.executable).with_name("trove")
        self.proc = subprocess.Popen(
            [str(trove), "tail", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def read(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            try:
                out.append(json.loads(self.lines.get(timeout=timeout)))
            except queue.Empty:
                raise AssertionError(f"tail printed {len(out)} of {count} lines") from None
        return out

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=10)
        return err


def test_cli_tail_json_receives_live_events_once(live: LiveServer, namespace: str, tmp_path: Path) -> None:
    start = now_ts()
    tail = _Tail(
        cli_env(live, tmp_path),
        "--json",
        "--interval",
        "0.5",
        "--namespace",
        namespace,
        "--types",
        "file.written",
        "--since",
        start,
    )
    try:
        with client(live, namespace) as trove:
            for i in range(3):
                trove.write(f"workspace/t{i}.txt", "x")
        got = tail.read(3)
        assert [e["data"]["path"] for e in got] == [f"workspace/t{i}.txt" for i in range(3)]
        with client(live, namespace) as trove:
            trove.write("workspace/sentinel.txt", "x")
        [sentinel] = tail.read(1)
        # Several polls later, the sentinel came next: nothing was printed twice.
        assert sentinel["data"]["path"] == "workspace/sentinel.txt"
    finally:
        tail.stop()


def test_cli_tail_burst_over_page_size_printed_exactly_once(
    live: LiveServer, namespace: str, tmp_path: Path
) -> None:
    with client(live, namespace) as trove:
        trove.write("workspace/first.txt", "x")
    tail = _Tail(
        cli_env(live, tmp_path), "--json", "--interval", "0.5", "--namespace", namespace, "--since", now_ts()
    )
    try:
        # 250 events commit at once (one transaction), so one poll sees more than its 200 limit.
        with live.ctx.db.write() as conn:
            for i in range(250):
                record(
                    conn,
                    workspace_id=live.workspace_id,
                    namespace=namespace,
                    type_="file.written",
                    actor=Actor("key-burst", "burst"),
                    data={"path": f"workspace/b{i}.txt", "size_bytes": i},
                )
        got = tail.read(250)
        assert [e["data"]["size_bytes"] for e in got] == list(range(250))
        with client(live, namespace) as trove:
            trove.write("workspace/after.txt", "x")
        assert tail.read(1)[0]["data"]["path"] == "workspace/after.txt"
    finally:
        tail.stop()


def test_cli_tail_human_lines(live: LiveServer, namespace: str, tmp_path: Path) -> None:
    tail_env = cli_env(live, tmp_path)
    trove_bin = Path(sys.executable).with_name("trove")
    proc = subprocess.Popen(
        [str(trove_bin), "tail", "--interval", "0.5", "--namespace", namespace, "--since", now_ts()],
        env=tail_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or []], daemon=True).start()
    try:
        with client(live, namespace) as trove:
            trove.write("workspace/notes/research.md", "x" * 1200)
            trove.exec("ls -la workspace/notes/")
        out = [lines.get(timeout=30) for _ in range(3)]
        text = "".join(out)
        assert "namespace.created" in text
        assert "file.written" in text
        assert "workspace/notes/research.md  (1.2KB)" in text
        assert "exec.completed" in text
        assert "ls -la workspace/notes/  exit=0" in text
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
