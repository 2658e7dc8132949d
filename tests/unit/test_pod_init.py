"""The sandbox pod's PID 1 (``builders.PID1_SCRIPT``, plain sh): orphans die, zombies are reaped.

Run for real as PID 1 of a fresh pid namespace (``unshare``, as root), under dash: the shell
of Debian-based sandbox images.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trove_operator.builders import PID1_SCRIPT

UNSHARE = shutil.which("unshare")
NSENTER = shutil.which("nsenter")
DASH = shutil.which("dash") or shutil.which("sh")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or None in (UNSHARE, NSENTER, DASH),
    reason="needs root, unshare, nsenter and a POSIX sh",
)


def sleepers(nap: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.rstrip(b"\0").split(b"\0")[-1] == nap.encode():  # sleep <nap>, python3 -c ... <nap>
                found.append(int(entry.name))
    return found


def children_of(pid: int) -> list[str]:
    """The state letter of each child of ``pid`` (host view)."""
    states = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if int(fields[1]) == pid:
                states.append(fields[0])
    return states


def test_pid_1_kills_orphans_and_reaps_them() -> None:
    nap = f"{600 + secrets.randbelow(100)}.{secrets.randbelow(10**6):06d}"
    assert DASH is not None
    assert UNSHARE is not None
    assert NSENTER is not None
    proc = subprocess.Popen(
        [UNSHARE, "--pid", "--fork", "--kill-child", "--mount-proc", DASH, "-c", PID1_SCRIPT]
    )
    try:
        deadline = time.monotonic() + 30  # PID 1 scans each second; a bound for a loaded host
        while not (init := _child(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert init
        # Stopped while the orphans are made, so they are seen before it may act.
        os.kill(init, signal.SIGSTOP)
        # As `kubectl exec` does: a process entering the namespace from outside (its parent is
        # not PID 1) leaves orphans: a setsid'd sleeper, one whose name (comm) holds ") S 1 "
        # and a newline, and a short-lived one that becomes a zombie.
        orphans = '( setsid sleep "$NAP" & ); ( "$PYTHON" -c "$RENAMED" "$NAP" & ); ( sh -c \'exit 0\' & )'
        env = {"PATH": os.environ["PATH"], "NAP": nap, "RENAMED": RENAMED, "PYTHON": sys.executable}
        subprocess.run(
            [NSENTER, "-t", str(init), "-p", "--", DASH, "-c", orphans], env=env, check=True, timeout=30
        )
        while (len(sleepers(nap)) < 2 or "Z" not in children_of(init)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(sleepers(nap)) == 2
        assert "Z" in children_of(init)
        os.kill(init, signal.SIGCONT)
        # Its own `sleep 1` comes and goes (sleeping, or running just after its fork): what must
        # be gone are the orphans, and no zombie may be left.
        while (sleepers(nap) or "Z" in children_of(init)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sleepers(nap) == []
        assert "Z" not in children_of(init)
        # It stops at once on SIGTERM (a pod is deleted without waiting out its grace period).
        os.kill(init, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
        for pid in sleepers(nap):
            os.kill(pid, signal.SIGKILL)


RENAMED = (
    "import ctypes, sys, time; "
    "ctypes.CDLL(None).prctl(15, ctypes.c_char_p(b'x) S 1 1\\n1'), 0, 0, 0); "
    "time.sleep(float(sys.argv[1]))"
)


def _child(pid: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                return int(entry.name)
    return 0
