"""Answers never carry internal details (database host and port, paths, API server address).

The server logs them with the request id and answers a generic message naming that id.
Real PostgreSQL stopped under a running server; a real HTTP server standing in for the
Kubernetes API server (the refusal and the unreachable port are what a cluster produces).
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from kubernetes import client as k8s_client

from tests.support.postgres import _as_server_user, find_bin_dir, free_port, start_postgres
from tests.support.server import start_server
from trove_api.runtimes.kubernetes.kubeapi import KubeApi
from trove_core.errors import KubernetesApiError, TroveError, UnavailableError


def test_readyz_with_the_database_down_names_no_host_or_port(caplog: pytest.LogCaptureFixture) -> None:
    with start_postgres() as pg:
        url = pg.create_database()
        with start_server(database_url=url) as live:
            assert httpx.get(f"{live.base_url}/readyz", timeout=30).status_code == 200
            bin_dir = find_bin_dir()
            assert bin_dir is not None
            subprocess.run(
                _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(pg.data_dir), "-m", "immediate", "stop"]),
                check=True,
                capture_output=True,
                cwd=pg.data_dir.parent,
                timeout=60,
            )
            with caplog.at_level(logging.ERROR):
                answer = httpx.get(f"{live.base_url}/readyz", timeout=30)
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["x-content-type-options"] == "nosniff"
    problem = answer.json()
    assert problem["code"] == "unavailable"
    for secret in ("127.0.0.1", str(pg.port), "psycopg", "postgres", "sqlalche"):
        assert secret not in answer.text, (secret, problem)
    assert problem["request_id"] in problem["detail"]
    logged = [r.getMessage() for r in caplog.records if problem["request_id"] in r.getMessage()]
    assert any(str(pg.port) in line for line in logged), logged


@contextmanager
def _fake_api_server(status: int, message: str) -> Iterator[str]:
    """An HTTP server answering every call like a kube-apiserver refusing it."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": status})
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        do_GET = do_POST = do_PATCH = _answer

        def log_message(self, *_: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _api(host: str) -> KubeApi:
    cfg = k8s_client.Configuration()
    cfg.host = host
    return KubeApi(cfg, "trove-system")


async def _refusal(host: str) -> TroveError:
    api = _api(host)
    try:
        with pytest.raises(TroveError) as caught:
            await api.get_tns("my-ns")
    finally:
        await api.aclose()
    return caught.value


INTERNAL = 'trovenamespaces "my-ns" is forbidden: User "system:serviceaccount:trove-system:trove-api"'


@pytest.mark.parametrize("status", [403, 500])
async def test_kubernetes_refusals_keep_their_message_for_the_log(status: int) -> None:
    with _fake_api_server(status, INTERNAL) as host:
        error = await _refusal(host)
    assert isinstance(error, KubernetesApiError if status == 403 else UnavailableError)
    for secret in ("127.0.0.1", "serviceaccount", "trove-system", "my-ns"):
        assert secret not in error.detail, error.detail
    assert error.internal is not None
    assert "serviceaccount" in error.internal


async def test_an_unreachable_kubernetes_api_is_not_named() -> None:
    port = free_port()
    error = await _refusal(f"http://127.0.0.1:{port}")
    assert isinstance(error, UnavailableError)
    assert str(port) not in error.detail
    assert "127.0.0.1" not in error.detail
    assert error.internal is not None
    assert str(port) in error.internal
