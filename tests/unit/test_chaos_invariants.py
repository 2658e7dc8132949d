"""The chaos harness's pure pieces: the change/event audit and the run's verdict."""

from __future__ import annotations

from typing import Any

from tests.chaos.invariants import Blob, Op, audit
from tests.chaos.report import CaseReport, render, summary


def written(path: str, content: bytes) -> dict[str, Any]:
    return {"type": "file.written", "data": {"path": f"workspace/{path}", "size_bytes": len(content)}}


def deleted(path: str) -> dict[str, Any]:
    return {"type": "file.deleted", "data": {"path": f"workspace/{path}"}}


def executed(command: str) -> dict[str, Any]:
    return {"type": "exec.completed", "data": {"command": command, "exit_code": 0}}


A, B, X = b"alpha", b"bravo!", b"exec out"


def test_a_consistent_crash_recovery_has_no_problems() -> None:
    ops = [
        Op("write", "w/a.txt", Blob.of(A), acked=True),
        Op("write", "w/b.txt", Blob.of(B), acked=True),
        Op("delete", "w/b.txt", acked=True),
        Op("exec", "x/1.txt", Blob.of(X), acked=True),
        Op("write", "w/never.txt", Blob.of(A)),  # in flight at the kill, rolled back
    ]
    events = [
        written("w/a.txt", A),
        written("w/b.txt", B),
        deleted("w/b.txt"),
        executed("printf > workspace/x/1.txt"),
    ]
    disk = {"w/a.txt": Blob.of(A), "x/1.txt": Blob.of(X)}
    assert audit(ops, events, disk).problems() == []


def test_an_unacknowledged_write_that_landed_with_its_event_is_fine() -> None:
    ops = [Op("write", "w/late.txt", Blob.of(A))]
    assert audit(ops, [written("w/late.txt", A)], {"w/late.txt": Blob.of(A)}).problems() == []


def test_each_broken_promise_is_named_with_its_count() -> None:
    ops = [
        Op("write", "w/no-event-1.txt", Blob.of(A)),
        Op("write", "w/no-event-2.txt", Blob.of(A), acked=True),
        Op("write", "w/twice.txt", Blob.of(A), acked=True),
        Op("write", "w/torn.bin", Blob.of(B)),
        Op("write", "w/lost.txt", Blob.of(A), acked=True),
        Op("write", "w/gone.txt", Blob.of(A), acked=True),
        Op("delete", "w/gone.txt"),
        Op("exec", "x/silent.txt", Blob.of(X)),
    ]
    events = [
        written("w/twice.txt", A),
        written("w/twice.txt", A),
        written("w/lost.txt", A),
        written("w/gone.txt", A),
    ]
    disk = {
        "w/no-event-1.txt": Blob.of(A),
        "w/no-event-2.txt": Blob.of(A),
        "w/twice.txt": Blob.of(A),
        "w/torn.bin": Blob.of(B[:3]),
        "x/silent.txt": Blob.of(X),
        "stray.txt": Blob.of(A),
    }
    result = audit(ops, events, disk)
    assert sorted(result.files_without_event) == [
        "w/no-event-1.txt",
        "w/no-event-2.txt",
        "w/torn.bin",
        "x/silent.txt",
    ]
    assert result.files_with_extra_events == ["w/twice.txt"]
    assert result.half_written == ["w/torn.bin"]
    assert result.acked_without_event == ["w/no-event-2.txt"]
    assert result.acked_lost == ["w/lost.txt"]
    assert result.events_without_change == ["w/lost.txt"]
    assert result.removed_without_event == ["w/gone.txt"]
    assert result.unexplained_files == ["stray.txt"]
    assert result.problems()[0].startswith(
        "4 files on disk without a file.written (or exec.completed) event (e.g. w/no-event-1.txt"
    )


def test_an_event_whose_size_differs_from_the_file_is_not_its_event() -> None:
    ops = [Op("write", "w/a.txt", Blob.of(B), acked=True)]
    result = audit(ops, [written("w/a.txt", A)], {"w/a.txt": Blob.of(B)})
    assert result.events_without_change == ["w/a.txt"]


def test_a_failed_invariant_or_an_error_fails_the_run_and_a_skip_does_not() -> None:
    held, broken, crashed, skipped = (CaseReport(n, n) for n in ("held", "broken", "crashed", "skipped"))
    held.check("fine", True)
    broken.check("events", False, "78 files on disk without a file.written event")
    crashed.error = "RemoteProtocolError: the server hung up"
    skipped.skipped = "needs root"
    assert [r.failed for r in (held, broken, crashed, skipped)] == [False, True, True, False]
    assert "FAIL events: 78 files on disk without a file.written event" in render(broken)
    assert summary([held, broken, crashed, skipped]) == (
        "chaos: 1 held, 2 failed (broken, crashed), 1 skipped (skipped)"
    )
