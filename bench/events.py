"""`python -m bench.events`: event throughput under 50 concurrent execs, and write → SSE / webhook latency.

Runs its own `trove-server serve` (webhooks to loopback allowed), a stdlib receiver on
127.0.0.1 and one SSE subscriber; prints events/s and p50/p95 latencies and saves
bench/results/events.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from trove_sdk import TroveAdminClient, TroveClient

from bench.common import Result, ServerProcess, header, latency_summary, launch_server

NAME = "events"
EXECS = 50
EXECS_EACH = 4
WRITES = 100


def _receiver(arrivals: dict[str, float]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            path = json.loads(body).get("data", {}).get("path")
            if path:
                arrivals.setdefault(path, time.perf_counter())
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _subscribe(server: ServerProcess, arrivals: dict[str, float], ready: threading.Event) -> None:
    # The stream ends when the server stops at the end of the run.
    with contextlib.suppress(httpx.HTTPError):
        _read_stream(server, arrivals, ready)


def _read_stream(server: ServerProcess, arrivals: dict[str, float], ready: threading.Event) -> None:
    url = f"{server.base_url}/v1/workspaces/{server.workspace_id}/webhooks/stream"
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.stream(
        "GET", url, headers=headers, params={"types": "file.written"}, timeout=None
    ) as response:
        buffer = ""
        for chunk in response.iter_text():
            buffer += chunk
            while "\n\n" in buffer:
                message, buffer = buffer.split("\n\n", 1)
                for line in message.split("\n"):
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        if event["type"] == "connected":
                            ready.set()
                        elif event.get("data", {}).get("path"):
                            arrivals.setdefault(event["data"]["path"], time.perf_counter())


def _count_events(server: ServerProcess, since: str) -> int:
    total, cursor = 0, None
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {server.admin_key}"}
    ) as http:
        while True:
            params: dict[str, Any] = {"limit": 1000, "since": since}
            if cursor:
                params["cursor"] = cursor
            page = http.get(f"/v1/workspaces/{server.workspace_id}/events", params=params).json()
            total += len(page["events"])
            cursor = page["next_cursor"]
            if not cursor:
                return total


def _throughput(server: ServerProcess) -> dict[str, Any]:
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1)) + ".000000Z"

    def agent(i: int) -> None:
        with TroveClient(
            api_key=server.workspace_key, namespace=f"bench-ev-{i}", base_url=server.base_url
        ) as c:
            for j in range(EXECS_EACH):
                c.exec_detailed(f"echo {i}-{j}")

    started = time.perf_counter()
    with ThreadPoolExecutor(EXECS) as pool:
        list(pool.map(agent, range(EXECS)))
    elapsed = time.perf_counter() - started
    logged = _count_events(server, since)
    return {"events": logged, "seconds": round(elapsed, 3), "events_per_s": round(logged / elapsed, 1)}


def _latency(server: ServerProcess) -> dict[str, Any]:
    sse: dict[str, float] = {}
    hooks: dict[str, float] = {}
    httpd = _receiver(hooks)
    ready = threading.Event()
    threading.Thread(target=_subscribe, args=(server, sse, ready), daemon=True).start()
    if not ready.wait(30):
        raise RuntimeError("SSE stream did not connect")
    with TroveAdminClient(
        api_key=server.admin_key, workspace_id=server.workspace_id, base_url=server.base_url
    ) as a:
        hook = a.create_webhook(f"http://127.0.0.1:{httpd.server_address[1]}/hook", events=["file.written"])
    sent: dict[str, float] = {}
    with TroveClient(api_key=server.workspace_key, namespace="bench-lat", base_url=server.base_url) as client:
        client.write("workspace/warmup.txt", "x")
        for i in range(WRITES):
            path = f"workspace/lat-{i}.txt"
            sent[path] = time.perf_counter()
            client.write(path, "x")
            time.sleep(0.02)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (len(sse) < WRITES + 1 or len(hooks) < WRITES + 1):
        time.sleep(0.05)
    httpd.shutdown()
    with TroveAdminClient(
        api_key=server.admin_key, workspace_id=server.workspace_id, base_url=server.base_url
    ) as a:
        a.delete_webhook(hook.webhook_id)
    return {
        "sse": latency_summary([sse[p] - t for p, t in sent.items() if p in sse]),
        "webhook": latency_summary([hooks[p] - t for p, t in sent.items() if p in hooks]),
        "missing_sse": WRITES - sum(p in sse for p in sent),
        "missing_webhook": WRITES - sum(p in hooks for p in sent),
    }


def run(server: ServerProcess) -> Result:
    header(f"events: {EXECS} concurrent agents x {EXECS_EACH} execs; {WRITES} writes → SSE and webhook")
    throughput = _throughput(server)
    rate = throughput["events_per_s"]
    print(f"  logged {throughput['events']} events in {throughput['seconds']}s: {rate} events/s")
    latency = _latency(server)
    for kind in ("sse", "webhook"):
        s = latency[kind]
        print(f"  write → {kind:<7}: p50 {s['p50_ms']} ms  p95 {s['p95_ms']} ms  (n={s['n']})")
    complete = latency["missing_sse"] == 0 and latency["missing_webhook"] == 0
    return Result(
        name=NAME,
        figure=f"{throughput['events_per_s']} events/s; SSE p95 {latency['sse']['p95_ms']} ms; "
        f"webhook p95 {latency['webhook']['p95_ms']} ms",
        baseline="the write's own response time (no separate baseline)",
        ratio="-",
        target="every write reaches the SSE subscriber and the webhook receiver",
        passed=complete,
        details={"throughput": throughput, "latency": latency},
    )


def main() -> int:
    # The receiver listens on loopback, which deliveries refuse unless this is set.
    os.environ["TROVE_WEBHOOK_ALLOW_PRIVATE"] = "true"
    with launch_server() as server:
        result = run(server)
    result.show()
    print(f"  saved {result.save()}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
