"""kill -9 mid-restore: the namespace is wholly one state, and snapshot.restored says which.

State A (the snapshot) and state B (the namespace when the restore starts) differ in every
file, so what lies on disk after the restart classifies as A, B or a mix. One uninterrupted
restore first measures how long a restore takes; the kills then land at fractions of that,
and at the moment the namespace directory is swapped.
"""

from __future__ import annotations

import os
import threading
import time

import httpx

from tests.chaos.invariants import Blob
from tests.chaos.report import CaseReport
from tests.chaos.server import Server, running

FILES = 1500
BLOB_MB = 12
# Kills at fractions of the measured restore time, and ``SWAP`` rounds: the moment the
# namespace directory changes identity (today's restore swaps directories; when a restore
# works differently, such a round waits out its bound and kills late, and says so).
SWAP = -1.0
KILL_POINTS = (0.3, 0.7, SWAP, SWAP, 1.1)


def _set_state(server: Server, namespace: str, tag: str) -> None:
    # A new random blob each time: the states differ in content, not only in names.
    script = (
        f"mkdir -p workspace/d && cd workspace/d && "
        f"for i in $(seq 1 {FILES}); do printf '{tag}-%s' $i > f$i.txt; done && "
        f"head -c {BLOB_MB}M /dev/urandom > ../blob.bin && "
        + ("rm -f ../only-b.txt" if tag == "A" else "printf b > ../only-b.txt")
    )
    with server.http(namespace, timeout=120) as http:
        answer = http.post("/v1/exec", json={"command": script})
        answer.raise_for_status()
        if answer.json()["exit_code"] != 0:
            raise RuntimeError(f"setting state {tag} failed: {answer.json()['stderr'][:300]}")


def _classify(server: Server, namespace: str, blob_a: str) -> str:
    disk = server.files_on_disk(namespace)
    small = {p: b for p, b in disk.items() if p.startswith("d/")}
    a = sum(1 for p, b in small.items() if b == Blob.of(f"A-{p[3:-4]}".encode()))
    b = sum(1 for p, b in small.items() if b == Blob.of(f"B-{p[3:-4]}".encode()))
    blob = disk.get("blob.bin")
    only_b = "only-b.txt" in disk
    if a == FILES and b == 0 and blob is not None and blob.sha256 == blob_a and not only_b:
        return "snapshot"
    if b == FILES and a == 0 and blob is not None and blob.sha256 != blob_a and only_b:
        return "pre-restore"
    blob_state = "missing" if blob is None else ("A" if blob.sha256 == blob_a else "B")
    return f"MIXED ({a} A files, {b} B files of {FILES}, blob {blob_state}, only-b.txt {only_b})"


def _restored_events(server: Server, namespace: str, snapshot_id: str) -> int:
    return sum(
        1
        for e in server.events(namespace)
        if e["type"] == "snapshot.restored" and e["data"].get("snapshot_id") == snapshot_id
    )


def _kill_at_swap(server: Server, namespace: str, bound_s: float) -> str:
    """Poll the namespace directory's inode and SIGKILL as soon as it changes (or at the bound)."""
    directory = server.namespace_dir(namespace)

    def identity() -> int | None:
        try:
            return os.stat(directory).st_ino
        except OSError:
            return None

    before = identity()
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if identity() != before:
            server.kill()
            return "at the directory swap"
        time.sleep(0.0005)
    server.kill()
    return f"no swap seen within {bound_s:.1f} s, killed then"


def kill_mid_restore(report: CaseReport) -> None:
    namespace = "restore"
    with running("restore") as server:
        _set_state(server, namespace, "A")
        blob_a = server.files_on_disk(namespace)["blob.bin"].sha256
        with server.http(namespace, timeout=120) as http:
            created = http.post("/v1/snapshots", json={"label": "chaos-A"})
            created.raise_for_status()
        snapshot_id = created.json()["snapshot_id"]
        _set_state(server, namespace, "B")
        started = time.monotonic()
        with server.http(namespace, timeout=180) as http:
            http.post(f"/v1/snapshots/{snapshot_id}/restore").raise_for_status()
        full_s = time.monotonic() - started
        report.fact(
            f"namespace of {FILES} files + a {BLOB_MB} MB blob; an uninterrupted restore took {full_s:.1f} s"
        )
        rounds_ok = 0
        for point in KILL_POINTS:
            _set_state(server, namespace, "B")
            events_before = _restored_events(server, namespace, snapshot_id)
            answer: dict[str, str] = {}

            def restore(answer: dict[str, str]) -> None:
                try:
                    with server.http(namespace, timeout=180) as http:
                        answer["status"] = str(http.post(f"/v1/snapshots/{snapshot_id}/restore").status_code)
                except httpx.HTTPError as exc:
                    answer["status"] = type(exc).__name__

            thread = threading.Thread(target=restore, args=(answer,), daemon=True)
            thread.start()
            if point == SWAP:
                when = _kill_at_swap(server, namespace, full_s * 3 + 5)
            else:
                time.sleep(full_s * point)
                server.kill()
                when = f"at {point:.0%} ({full_s * point:.1f} s)"
            thread.join(timeout=30)
            temp_before = server.leftover_temp_files()
            server.start()
            state = _classify(server, namespace, blob_a)
            new_events = _restored_events(server, namespace, snapshot_id) - events_before
            acked = answer.get("status", "").startswith("2")
            leftovers = server.leftover_temp_files()
            report.fact(
                f"kill {when}: "
                f"restore answer {answer.get('status', 'none')}, "
                f"found {state}, new snapshot.restored events {new_events}, "
                f"temp files {len(temp_before)} before restart / {len(leftovers)} after"
            )
            problems = []
            if state.startswith("MIXED"):
                problems.append("namespace is a mix of both states")
            if (state == "snapshot") != (new_events == 1):
                problems.append(f"state {state} but {new_events} snapshot.restored event(s)")
            if acked and state != "snapshot":
                problems.append("restore acknowledged but the snapshot state is not in place")
            if leftovers:
                problems.append(f"{len(leftovers)} temp files after recovery ({leftovers[:2]})")
            if problems:
                report.check(
                    f"kill {when}: wholly one state, event iff restored",
                    False,
                    "; ".join(problems),
                )
            else:
                rounds_ok += 1
        report.check(
            "every round: namespace wholly old or wholly new, snapshot.restored iff new, no temp files",
            rounds_ok == len(KILL_POINTS),
            f"{len(KILL_POINTS) - rounds_ok} of {len(KILL_POINTS)} rounds broke it",
        )
