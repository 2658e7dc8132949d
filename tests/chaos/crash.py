"""kill -9 mid-upload and mid-burst: acknowledged calls vs files and events after a restart."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.chaos.invariants import Audit, Blob, Op, audit
from tests.chaos.report import CaseReport
from tests.chaos.server import Server, running

MIB = 1024 * 1024
CHUNK = 64 * 1024


class OpLog:
    """Calls made from several threads; an op is appended before it is sent."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def sent(self, op: Op) -> int:
        with self._lock:
            self.ops.append(op)
            return len(self.ops) - 1

    def answered(self, index: int, outcome: str) -> None:
        with self._lock:
            if outcome.startswith("2"):  # the SDK takes any 2xx as done
                op = self.ops[index]
                self.ops[index] = Op(op.kind, op.path, op.content, acked=True)
            self.outcomes[outcome] += 1


def outcome_of(send: Callable[..., httpx.Response], url: str, **kwargs: Any) -> str:
    """The status as text, or the transport error's name (the server died mid-call)."""
    try:
        return str(send(url, **kwargs).status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def upload_body(path: str, size: int) -> tuple[Blob, Callable[[], Iterator[bytes]]]:
    """Content derived from the path, so a file found later can be told apart from a torn one."""
    block = hashlib.sha256(path.encode()).digest() * (CHUNK // 32)
    digest = hashlib.sha256()
    for start in range(0, size, CHUNK):
        digest.update(block[: min(CHUNK, size - start)])

    def chunks() -> Iterator[bytes]:
        for start in range(0, size, CHUNK):
            # A short pause per chunk keeps several uploads mid-stream when the kill lands.
            time.sleep(0.004)
            yield block[: min(CHUNK, size - start)]

    return Blob(size, digest.hexdigest()), chunks


def add_audit_checks(report: CaseReport, result: Audit) -> None:
    problems = result.problems()
    report.check(
        "every file on disk has exactly one event for its content, "
        "every acknowledged call its event and result",
        not problems,
        "; ".join(problems),
    )


def check_temp_files(report: CaseReport, server: Server, before_restart: list[str]) -> None:
    after = server.leftover_temp_files()
    report.fact(f"temp files left by the crash: {len(before_restart)} before restart, {len(after)} after")
    report.check("no temp files after recovery", not after, f"{len(after)} left, e.g. {after[:3]}")


# -- 1. kill -9 mid-upload -------------------------------------------------------------------


def _kill_when_a_file_lands(server: Server, directories: list[Path], bound_s: float) -> str:
    """SIGKILL as soon as a name not seen before appears in one of ``directories`` (or at the bound)."""

    def names() -> set[str]:
        found: set[str] = set()
        for directory in directories:
            with contextlib.suppress(OSError):
                found.update(f"{directory.name}/{entry.name}" for entry in os.scandir(directory))
        return found

    seen = names()
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if not names() <= seen:
            server.kill()
            return "as a file landed"
        time.sleep(0.0005)
    server.kill()
    return f"after {bound_s:.0f} s without a new file"


def kill_mid_upload(report: CaseReport, clients: int = 6, run_s: float = 4.0) -> None:
    namespace = "uploads"
    log = OpLog()
    stop = threading.Event()
    with running("upload") as server:

        def client(number: int) -> None:
            with server.http(namespace, timeout=60) as http:
                for k in range(40):
                    if stop.is_set():
                        return
                    path = f"up/c{number}-{k}.bin"
                    size = (2 + (number + k) % 4) * MIB + number * 1000 + k
                    content, chunks = upload_body(path, size)
                    index = log.sent(Op("write", path, content))
                    outcome = outcome_of(
                        http.put, f"/files/{path}", content=chunks(), headers={"Content-Length": str(size)}
                    )
                    log.answered(index, outcome)
                    if not outcome.startswith("2"):
                        return

        workers = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
        for worker in workers:
            worker.start()
        time.sleep(run_s)
        # The kill lands as the next upload appears on disk: others are mid-stream, and that
        # one is between its rename and its event if those are two steps.
        landed = _kill_when_a_file_lands(server, [server.namespace_dir(namespace) / "up"], bound_s=run_s)
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        temp_before = server.leftover_temp_files()
        server.start()
        acked = [op for op in log.ops if op.acked]
        report.fact(
            f"uploads sent {len(log.ops)}, acknowledged (2xx) {len(acked)}, "
            f"cut by the kill {len(log.ops) - len(acked)} (killed {landed}); answers {dict(log.outcomes)}"
        )
        disk = server.files_on_disk(namespace)
        events = server.events(namespace)
        intact = sum(1 for op in acked if disk.get(op.path) == op.content)
        torn = [p for p, blob in disk.items() if blob not in {op.content for op in log.ops if op.path == p}]
        per_path = Counter(
            e["data"]["path"].removeprefix("workspace/") for e in events if e["type"] == "file.written"
        )
        counts = Counter(per_path.get(path, 0) for path in disk)
        report.fact(
            f"found after restart: {len(disk)} files, {intact}/{len(acked)} acknowledged intact, "
            f"{len(torn)} partial; file.written events per file on disk: "
            + ", ".join(f"{n} event(s): {files} file(s)" for n, files in sorted(counts.items()))
        )
        add_audit_checks(report, audit(log.ops, events, disk))
        check_temp_files(report, server, temp_before)


# -- 3. kill -9 mid-burst --------------------------------------------------------------------


def kill_mid_burst(report: CaseReport, workers_n: int = 8, run_s: float = 5.0) -> None:
    namespace = "burst"
    log = OpLog()
    stop = threading.Event()
    with running("burst") as server:

        def worker(number: int) -> None:
            mine: list[str] = []
            with server.http(namespace, timeout=60) as http:
                for k in range(400):
                    if stop.is_set():
                        return
                    kind = ("write", "write", "exec", "delete")[k % 4]
                    if kind == "delete" and mine:
                        path = mine.pop(0)
                        index = log.sent(Op("delete", path))
                        outcome = outcome_of(http.post, "/delete", json={"path": path})
                    elif kind == "exec":
                        path = f"x/{number}-{k}.txt"
                        text = f"exec {number}-{k}"
                        index = log.sent(Op("exec", path, Blob.of(text.encode())))
                        command = f"mkdir -p workspace/x && printf %s '{text}' > workspace/{path}"
                        outcome = outcome_of(http.post, "/v1/exec", json={"command": command})
                    else:
                        path = f"w/{number}-{k}.txt"
                        text = f"write {number}-{k} " * (1 + k % 50)
                        index = log.sent(Op("write", path, Blob.of(text.encode())))
                        outcome = outcome_of(http.post, "/write", json={"path": path, "content": text})
                        if outcome.startswith("2"):
                            mine.append(path)
                    log.answered(index, outcome)
                    if not outcome.isdigit():
                        return

        threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(workers_n)]
        for thread in threads:
            thread.start()
        time.sleep(run_s)
        # As for uploads: the kill lands as a write or an exec puts a new file on disk.
        root = server.namespace_dir(namespace)
        landed = _kill_when_a_file_lands(server, [root / "w", root / "x"], bound_s=run_s)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        temp_before = server.leftover_temp_files()
        server.start()
        by_kind = Counter((op.kind, op.acked) for op in log.ops)
        report.fact(
            "calls sent/acknowledged: "
            + ", ".join(
                f"{kind} {by_kind[(kind, True)] + by_kind[(kind, False)]}/{by_kind[(kind, True)]}"
                for kind in ("write", "exec", "delete")
            )
            + f"; killed {landed}; answers {dict(log.outcomes)}"
        )
        disk = server.files_on_disk(namespace)
        events = server.events(namespace)
        types = Counter(e["type"] for e in events)
        report.fact(
            f"found after restart: {len(disk)} files; events file.written {types['file.written']}, "
            f"exec.completed {types['exec.completed']}, file.deleted {types['file.deleted']}"
        )
        add_audit_checks(report, audit(log.ops, events, disk))
        check_temp_files(report, server, temp_before)
