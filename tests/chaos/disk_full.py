"""A full data disk: the data dir on a small loop-mounted ext4, filled through the API.

Expected of a hardened server: 507 ``storage_full`` (never 500), old content intact, reads
still served, no change without its event, and writes work again once space is freed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.chaos.crash import add_audit_checks
from tests.chaos.invariants import Blob, Op, audit
from tests.chaos.report import CaseReport
from tests.chaos.server import running

SIZE_MB = 256
FILL_MB = 8
KEEP = b"old content that must survive a full disk\n"


class Unavailable(Exception):
    """The machine cannot give this case a small filesystem."""


@contextmanager
def small_filesystem() -> Iterator[Path]:
    if os.geteuid() != 0:
        raise Unavailable("needs root to mount a loop filesystem (run as root to include it)")
    if shutil.which("mkfs.ext4") is None:
        raise Unavailable("mkfs.ext4 is not installed (apt-get install e2fsprogs)")
    work = Path(tempfile.mkdtemp(prefix="trove-chaos-disk-", dir="/tmp"))
    image, mount = work / "disk.img", work / "data"
    mount.mkdir()
    work.chmod(0o711)
    try:
        subprocess.run(["truncate", "-s", f"{SIZE_MB}M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True, capture_output=True)
        mounted = subprocess.run(
            ["mount", "-o", "loop", str(image), str(mount)], capture_output=True, text=True
        )
        if mounted.returncode != 0:
            raise Unavailable(f"mount -o loop failed: {mounted.stderr.strip()}")
        try:
            mount.chmod(0o711)
            yield mount
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _answer(call: httpx.Response | Exception) -> str:
    if isinstance(call, Exception):
        return type(call).__name__
    if call.status_code >= 400:
        try:
            return f"{call.status_code} {call.json().get('code', '')}".strip()
        except ValueError:
            return f"{call.status_code} (not JSON)"
    return str(call.status_code)


def _try(http: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response | Exception:
    try:
        return http.request(method, url, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        return exc


def fill_the_disk(report: CaseReport) -> None:
    try:
        with small_filesystem() as mount:
            _run(report, mount)
    except Unavailable as why:
        report.skipped = str(why)


def _run(report: CaseReport, mount: Path) -> None:
    namespace = "full"
    ops: list[Op] = []
    answers: Counter[str] = Counter()
    with running("disk", data_dir=mount) as server, server.http(namespace, timeout=60) as http:
        keep = http.put("/files/keep.txt", content=KEEP)
        ops.append(Op("write", "keep.txt", Blob.of(KEEP), acked=keep.is_success))
        snapshot = http.post("/v1/snapshots", json={"label": "before-full"})
        snapshot_id = snapshot.json().get("snapshot_id") if snapshot.status_code < 300 else None
        fill = os.urandom(FILL_MB * 1024 * 1024)
        failed_at: list[str] = []
        # Big, then smaller uploads until each size is refused: the disk ends up truly full.
        for size, limit in ((len(fill), SIZE_MB // FILL_MB + 8), (256 * 1024, 64), (16 * 1024, 64)):
            for n in range(limit):
                path = f"fill/{size}-{n}.bin"
                result = _try(http, "PUT", f"/files/{path}", content=fill[:size])
                answers[f"upload {_answer(result)}"] += 1
                ok = isinstance(result, httpx.Response) and result.is_success
                ops.append(Op("write", path, Blob.of(fill[:size]), acked=ok))
                if not ok:
                    failed_at.append(f"{size // 1024} KiB after {n}")
                    break
        report.fact(f"{SIZE_MB} MB ext4 as the data dir; uploads refused at: {', '.join(failed_at)}")
        attempts = {
            "write": _try(http, "POST", "/write", json={"path": "small.txt", "content": "x" * 300_000}),
            "overwrite keep.txt": _try(http, "PUT", "/files/keep.txt", content=fill),
            "exec writing 8 MB": _try(
                http,
                "POST",
                "/v1/exec",
                json={"command": "head -c 8M /dev/zero > workspace/exec.bin; echo $?"},
            ),
        }
        ops.append(
            Op(
                "write",
                "small.txt",
                Blob.of(b"x" * 300_000),
                acked=_answer(attempts["write"]).startswith("2"),
            )
        )
        ops.append(
            Op(
                "write",
                "keep.txt",
                Blob.of(fill),
                acked=_answer(attempts["overwrite keep.txt"]).startswith("2"),
            )
        )
        for name, result in attempts.items():
            answers[f"{name} {_answer(result)}"] += 1
        # Tiny writes may still find a block for the file while the database cannot grow.
        for n in range(20):
            tiny = f"tiny {n}\n"
            result = _try(http, "POST", "/write", json={"path": f"tiny/{n}.txt", "content": tiny})
            answers[f"tiny write {_answer(result)}"] += 1
            ops.append(
                Op("write", f"tiny/{n}.txt", Blob.of(tiny.encode()), acked=_answer(result).startswith("2"))
            )
        kept = _try(http, "GET", "/files/keep.txt")
        listing = _try(http, "GET", "/v1/files", params={"path": "workspace/"})
        ready = _try(http, "GET", "/readyz")
        reads = {"read keep.txt": kept, "list": listing, "readyz": ready}
        report.fact("while full: " + ", ".join(f"{name} {_answer(r)}" for name, r in reads.items()))
        events = server.events(namespace)
        on_disk = server.files_on_disk(namespace)
        disk = {p: b for p, b in on_disk.items() if p != "exec.bin"}
        changes = audit(ops, events, disk)
        exec_events = sum(
            1 for e in events if e["type"] == "exec.completed" and "exec.bin" in e["data"]["command"]
        )
        exec_bin = on_disk.get("exec.bin")
        report.fact(
            f"the exec left exec.bin of {exec_bin.size if exec_bin else 0} bytes; "
            f"exec.completed events for it: {exec_events}"
        )
        after_fill = {
            "snapshot": _try(http, "POST", "/v1/snapshots", json={"label": "while-full"}),
            "restore": _try(http, "POST", f"/v1/snapshots/{snapshot_id}/restore")
            if snapshot_id
            else RuntimeError("no snapshot"),
        }
        for name, attempt in after_fill.items():
            answers[f"{name} {_answer(attempt)}"] += 1
        report.fact("answers: " + ", ".join(f"{k} x{v}" if v > 1 else k for k, v in sorted(answers.items())))
        # Keys are "<call> <status> [code]" or "<call> <transport error>" (the server hung up).
        statuses = {key: key.rsplit(" ", 2)[-2:] for key in answers}
        broken = [k for k, tail in statuses.items() if not any(t.isdigit() for t in tail)]
        errors_5xx = [k for k in answers if any(t.startswith("5") and t != "507" for t in statuses[k])]
        full_answers = [k for k in answers if "507" in statuses[k]]
        report.check(
            "no 5xx but 507, no dropped connection, on a full disk",
            not (errors_5xx or broken),
            f"{errors_5xx + broken}",
        )
        report.check(
            "writes refused for space answer 507 (storage_full, or a quota code)",
            bool(full_answers),
            "no 507 answer seen",
        )
        kept_ok = isinstance(kept, httpx.Response) and kept.status_code == 200 and kept.content == KEEP
        report.check("old content survived", kept_ok, f"GET keep.txt {_answer(kept)}")
        served = all(isinstance(r, httpx.Response) and r.status_code == 200 for r in reads.values())
        report.check("reads served while full", served)
        add_audit_checks(report, changes)
        report.check(
            "an exec that changed files on a full disk has its exec.completed event",
            exec_bin is None or exec_events == 1,
            f"exec.bin on disk ({exec_bin.size if exec_bin else 0} bytes), {exec_events} event(s)",
        )
        for path in [op.path for op in ops if op.path.startswith("fill/")]:
            _try(http, "POST", "/delete", json={"path": path})
        again = _try(http, "POST", "/write", json={"path": "after.txt", "content": "space again"})
        report.check(
            "writes work again once space is freed", _answer(again).startswith("2"), f"write {_answer(again)}"
        )
