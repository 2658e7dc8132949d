"""Server peak RSS while five 100 MB uploads and five 100 MB downloads run at once, vs idle."""

from __future__ import annotations

import os
import threading
import time

import httpx
from trove_sdk import TroveClient

from bench.common import (
    Result,
    RssSampler,
    ServerProcess,
    header,
    launch_server,
    proc_status_kb,
    reset_peak_rss,
)

NAME = "memory"
NAMESPACE = "bench-memory"
STREAMS = 5
BLOB_BYTES = 100 * 1024 * 1024
TARGET_MB = 64
_KB_PER_MB = 1024


def _upload(server: ServerProcess, path: str, blob: bytes, errors: list[str]) -> None:
    try:
        with TroveClient(server.workspace_key, NAMESPACE, base_url=server.base_url, timeout=600) as client:
            client.upload(path, blob)
    except Exception as exc:
        errors.append(f"upload {path}: {exc!r}")


def _download(server: ServerProcess, path: str, errors: list[str]) -> None:
    # Streamed and discarded, so the client's own memory plays no part.
    headers = {"Authorization": f"Bearer {server.workspace_key}", "X-Namespace": NAMESPACE}
    try:
        received = 0
        with (
            httpx.Client(base_url=server.base_url, headers=headers, timeout=600) as http,
            http.stream("GET", f"/files/{path}") as response,
        ):
            response.raise_for_status()
            for chunk in response.iter_raw(1024 * 1024):
                received += len(chunk)
        if received != BLOB_BYTES:
            errors.append(f"download {path}: {received} bytes, expected {BLOB_BYTES}")
    except Exception as exc:
        errors.append(f"download {path}: {exc!r}")


def run(server: ServerProcess, streams: int = STREAMS) -> Result:
    header(f"server RSS during {streams} x 100 MiB uploads + {streams} x 100 MiB downloads at once")
    blob = os.urandom(BLOB_BYTES)
    with TroveClient(server.workspace_key, NAMESPACE, base_url=server.base_url, timeout=600) as client:
        for i in range(streams):
            client.upload(f"down-{i}.bin", blob)
        client.exec("true")  # every code path the transfers use has been imported and warmed
    time.sleep(1.0)
    idle_kb = proc_status_kb(server.pid, "VmRSS")
    hwm_reset = reset_peak_rss(server.pid)  # the preparation uploads above must not count
    errors: list[str] = []
    threads = [
        threading.Thread(target=_upload, args=(server, f"up-{i}.bin", blob, errors)) for i in range(streams)
    ] + [threading.Thread(target=_download, args=(server, f"down-{i}.bin", errors)) for i in range(streams)]
    started = time.perf_counter()
    with RssSampler(server.pid, interval_s=0.01) as sampler:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    wall = time.perf_counter() - started
    hwm_kb = proc_status_kb(server.pid, "VmHWM")
    peak_kb = max(sampler.peak_kb, hwm_kb if hwm_reset else 0)
    above_mb = (peak_kb - idle_kb) / _KB_PER_MB
    moved_mb = 2 * streams * BLOB_BYTES / 1e6
    result = Result(
        name=NAME,
        figure=f"peak RSS {peak_kb / _KB_PER_MB:.1f} MiB ({above_mb:+.1f} MiB over idle), "
        f"{len(errors)} errors",
        baseline=f"idle RSS {idle_kb / _KB_PER_MB:.1f} MiB",
        ratio=f"{peak_kb / idle_kb:.2f}x idle",
        target=f"< {TARGET_MB} MiB above idle",
        passed=above_mb < TARGET_MB and not errors,
        details={
            "idle_rss_kb": idle_kb,
            "sampled_peak_rss_kb": sampler.peak_kb,
            "vm_hwm_kb": hwm_kb,
            "vm_hwm_reset": hwm_reset,
            "samples": len(sampler.samples),
            "above_idle_mib": round(above_mb, 1),
            "wall_s": round(wall, 2),
            "aggregate_mb_s": round(moved_mb / wall, 1),
            "errors": errors,
        },
    )
    result.show()
    print(
        f"  ({len(sampler.samples)} samples, VmHWM {hwm_kb / _KB_PER_MB:.1f} MiB, {wall:.1f} s, "
        f"{moved_mb / wall:.0f} MB/s aggregate)"
    )
    for error in errors:
        print(f"  error: {error}")
    return result


def main() -> None:
    with launch_server() as server:
        run(server).save()


if __name__ == "__main__":
    main()
