"""Shared bench helpers: percentiles, a `trove-server serve` subprocess, RSS sampling, results."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

RESULTS_DIR = Path(__file__).parent / "results"
MB = 1_000_000  # throughput is reported in MB/s (10^6 bytes)
# Client variables the server must not inherit, and TROVE_* the launcher sets itself.
_SCRUBBED = ("TROVE_API_KEY", "TROVE_BASE_URL", "TROVE_NAMESPACE", "TROVE_WORKSPACE_ID", "TROVE_DATA_DIR")


# -- statistics ---------------------------------------------------------------------------


def percentile(samples: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (``pct`` in 0..100) of a non-empty sample."""
    if not samples:
        raise ValueError("percentile of an empty sample")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/mean/min/max in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "mean_ms": round(sum(ms) / len(ms), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
    }


def ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 3) if baseline else float("inf")


# -- the server under test ----------------------------------------------------------------


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    data_dir: Path
    workspace_id: str
    workspace_key: str
    admin_key: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(data_dir: Path, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(
        TROVE_DATA_DIR=str(data_dir),
        TROVE_HOST="127.0.0.1",
        TROVE_PORT=str(port),
        TROVE_RUNTIME="local",
        TROVE_LOG_LEVEL="warning",
    )
    env.update(extra or {})
    return env


def _server_command() -> list[str]:
    script = Path(sys.executable).parent / "trove-server"
    if script.exists():
        return [str(script), "serve"]
    found = shutil.which("trove-server")
    if found is None:
        raise RuntimeError("trove-server is not installed (run `make deps`)")
    return [found, "serve"]


def _parse_keys(text: str) -> tuple[str, str, str]:
    workspace = re.search(r"^Trove workspace: (\S+)", text, re.M)
    admin = re.search(r"^Admin key[^:]*: (\S+)", text, re.M)
    key = re.search(r"^Workspace key[^:]*:\s+(\S+)", text, re.M)
    if not (workspace and admin and key):
        raise RuntimeError(f"cannot parse the first-run keys file:\n{text}")
    return workspace.group(1), admin.group(1), key.group(1)


@contextlib.contextmanager
def launch_server(timeout_s: float = 60.0, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """`trove-server serve` as a child process with a fresh data dir; its first-run keys.

    ``env``: further TROVE_* settings for this server (a benchmark that needs more warm sandboxes).
    """
    data_dir = Path(tempfile.mkdtemp(prefix="trove-bench-", dir="/tmp"))
    # Sandbox uids must traverse the data dir to reach their namespace (mkdtemp makes it 0700).
    data_dir.chmod(0o711)
    port = _free_port()
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            _server_command(),
            env=server_env(data_dir, port, env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, base_url, log_path, timeout_s)
        keys_file = data_dir / "first-run-keys.txt"
        workspace_id, admin_key, workspace_key = _parse_keys(keys_file.read_text())
        yield ServerProcess(process, base_url, data_dir, workspace_id, workspace_key, admin_key, log_path)
    finally:
        _stop(process)
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"trove-server exited with {process.returncode}:\n{log_path.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"trove-server not ready after {timeout_s}s:\n{log_path.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- memory -------------------------------------------------------------------------------


def proc_status_kb(pid: int, field_name: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM, …) of /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise KeyError(field_name)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as handle:
        # The command name (field 2) may hold spaces; count fields after its closing parenthesis.
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``5`` > clear_refs, Linux ≥ 4.0); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples a process's VmRSS every ``interval_s`` in a thread, keeping the maximum."""

    def __init__(self, pid: int, interval_s: float = 0.01) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.samples.append(proc_status_kb(self.pid, "VmRSS"))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_kb(self) -> int:
        return max(self.samples) if self.samples else 0


# -- results ------------------------------------------------------------------------------


@dataclass
class Result:
    """One benchmark's outcome: the headline figure, its baseline, their ratio and the target."""

    name: str
    figure: str
    baseline: str
    ratio: str
    target: str
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)

    def show(self) -> None:
        verdict = "PASS" if self.passed else "MISS"
        print(f"  figure:   {self.figure}")
        print(f"  baseline: {self.baseline}")
        print(f"  ratio:    {self.ratio}")
        print(f"  target:   {self.target} -> {verdict}", flush=True)

    def save(self) -> Path:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"{self.name}.json"
        payload = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **asdict(self)}
        path.write_text(json.dumps(payload, indent=2) + "\n")
        return path


def header(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def summary_table(results: Sequence[Result]) -> str:
    rows = [("benchmark", "figure", "baseline", "ratio", "target", "ok")]
    rows += [(r.name, r.figure, r.baseline, r.ratio, r.target, "yes" if r.passed else "NO") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def run_each(
    runs: Iterable[tuple[Callable[[ServerProcess], Result], dict[str, str] | None]],
    prepare: Callable[[ServerProcess], None] | None = None,
) -> int:
    """Run each benchmark on a fresh server (with its extra settings), save and summarise the
    results; the exit status says whether every target was met."""
    results: list[Result] = []
    for run, env in runs:
        # A fresh server each: no benchmark inherits another's heap, caches or namespaces.
        with launch_server(env=env) as server:
            if prepare is not None:
                prepare(server)
            result = run(server)
        print(f"  saved {result.save()}")
        results.append(result)
    print("\n== summary ==")
    print(summary_table(results))
    return 0 if all(r.passed for r in results) else 1
