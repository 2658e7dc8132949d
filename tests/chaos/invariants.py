""" "Every change emits one event", checked over what clients were told, the event log and the disk.

Pure: the cases gather the operations they sent (each to its own path, with known content),
the events the API lists and the files found on disk after recovery; ``audit`` compares them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

OpKind = Literal["write", "exec", "delete"]


@dataclass(frozen=True)
class Blob:
    """A file's content by size and digest (large uploads are never kept whole in memory)."""

    size: int
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> Blob:
        return cls(len(data), hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class Op:
    """One call the harness made: ``acked`` when the server answered 2xx before any fault."""

    kind: OpKind
    path: str  # namespace-relative, as on disk
    content: Blob | None = None  # what a write or an exec puts there
    acked: bool = False


@dataclass
class Audit:
    files_without_event: list[str] = field(default_factory=list)
    files_with_extra_events: list[str] = field(default_factory=list)
    half_written: list[str] = field(default_factory=list)
    acked_without_event: list[str] = field(default_factory=list)
    acked_lost: list[str] = field(default_factory=list)
    events_without_change: list[str] = field(default_factory=list)
    removed_without_event: list[str] = field(default_factory=list)
    unexplained_files: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """One plain sentence per broken promise, with counts and a few examples."""
        sentences = {
            "files_without_event": "files on disk without a file.written (or exec.completed) event",
            "files_with_extra_events": "files on disk with more than one file.written event",
            "half_written": "files on disk whose content is not what any call sent (half-written)",
            "acked_without_event": "acknowledged calls without their event",
            "acked_lost": "acknowledged calls whose result is not on disk",
            "events_without_change": "events (file.written, exec.completed) for changes that are not on disk",
            "removed_without_event": "files removed without a file.deleted event",
            "unexplained_files": "files on disk that no call created",
        }
        found = []
        for name, sentence in sentences.items():
            items: list[str] = getattr(self, name)
            if items:
                found.append(f"{len(items)} {sentence} (e.g. {', '.join(sorted(items)[:3])})")
        return found


def _data(event: Mapping[str, Any]) -> Mapping[str, Any]:
    data = event.get("data")
    return data if isinstance(data, Mapping) else {}


def _rel(shown: str) -> str:
    return shown.removeprefix("workspace/")


def audit(ops: Iterable[Op], events: Iterable[Mapping[str, Any]], disk: Mapping[str, Blob]) -> Audit:
    ops = list(ops)
    events = list(events)
    written = Counter(_rel(_data(e).get("path", "")) for e in events if e.get("type") == "file.written")
    written_size = {
        _rel(_data(e).get("path", "")): _data(e).get("size_bytes")
        for e in events
        if e.get("type") == "file.written"
    }
    deleted = Counter(_rel(_data(e).get("path", "")) for e in events if e.get("type") == "file.deleted")
    # exec.completed today; any event naming the command (e.g. one completed at start-up) counts.
    commands = [str(_data(e)["command"]) for e in events if "command" in _data(e)]

    def exec_event(path: str) -> bool:
        return any(path in command for command in commands)

    by_path: dict[str, list[Op]] = {}
    for op in ops:
        by_path.setdefault(op.path, []).append(op)
    result = Audit()

    for path, content in disk.items():
        mine = by_path.get(path)
        if not mine:
            result.unexplained_files.append(path)
            continue
        if content not in {op.content for op in mine if op.content is not None}:
            result.half_written.append(path)
        kinds = {op.kind for op in mine}
        if "write" in kinds:
            if written[path] == 0:
                result.files_without_event.append(path)
            elif written[path] > 1:
                result.files_with_extra_events.append(path)
            elif written_size[path] != content.size:
                result.events_without_change.append(path)
        elif "exec" in kinds and written[path] == 0 and not exec_event(path):
            result.files_without_event.append(path)
        elif written[path] > 1:
            result.files_with_extra_events.append(path)

    for path, mine in by_path.items():
        on_disk = path in disk
        delete_sent = any(o.kind == "delete" for o in mine)
        for op in mine:
            if op.kind == "write":
                if op.acked and written[path] == 0:
                    result.acked_without_event.append(path)
                if op.acked and not delete_sent and disk.get(path) != op.content:
                    result.acked_lost.append(path)
            elif op.kind == "exec":
                if op.acked and not exec_event(path):
                    result.acked_without_event.append(path)
                if op.acked and not on_disk and not delete_sent:
                    result.acked_lost.append(path)
            elif op.kind == "delete":
                if op.acked and deleted[path] == 0:
                    result.acked_without_event.append(path)
                if op.acked and on_disk:
                    result.acked_lost.append(path)
        if not on_disk and deleted[path] == 0:
            evidence = (
                written[path] > 0 or exec_event(path) or any(o.acked for o in mine if o.kind != "delete")
            )
            if delete_sent:
                if evidence:
                    result.removed_without_event.append(path)
            elif written[path] > 0 or exec_event(path):
                result.events_without_change.append(path)
    for key in ("acked_without_event", "acked_lost", "events_without_change", "removed_without_event"):
        setattr(result, key, sorted(set(getattr(result, key))))
    return result
