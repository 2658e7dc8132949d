"""The pure parts of the get_host proxy: which port, which headers go through, which path."""

from __future__ import annotations

import pytest

from trove_api.e2b.access import target_port, traffic_token
from trove_api.e2b.ports import forwarded_headers, inner_target, response_headers
from trove_api.e2b.records import SandboxRecord
from trove_api.e2b.request_checks import E2bApiError


def test_target_port() -> None:
    assert target_port({}) is None
    assert target_port({"e2b-sandbox-port": "49983"}) is None
    assert target_port({"e2b-sandbox-port": "8000"}) == 8000
    for bad in ("0", "65536", "-1", "80a", "", " 80"):
        with pytest.raises(E2bApiError) as refused:
            target_port({"e2b-sandbox-port": bad})
        assert refused.value.status == 400


def test_credentials_routing_and_hop_by_hop_headers_stay_behind() -> None:
    sent = [
        (b"host", b"8000-sbx.example.test"),
        (b"x-api-key", b"trove-sk-secret"),
        (b"X-Access-Token", b"envd"),
        (b"e2b-traffic-access-token", b"traffic"),
        (b"authorization", b"Bearer x"),
        (b"e2b-sandbox-id", b"sbx"),
        (b"e2b-sandbox-port", b"8000"),
        (b"connection", b"keep-alive, x-private"),
        (b"x-private", b"named by Connection"),
        (b"keep-alive", b"timeout=5"),
        (b"upgrade", b"h2c"),
        (b"content-type", b"text/plain"),
        (b"transfer-encoding", b"chunked"),
        (b"cookie", b"a=b"),
    ]
    assert forwarded_headers(sent) == [
        (b"host", b"8000-sbx.example.test"),
        (b"content-type", b"text/plain"),
        (b"cookie", b"a=b"),
    ]
    back = [(b"content-length", b"3"), (b"connection", b"close"), (b"transfer-encoding", b"chunked")]
    assert response_headers(back) == [(b"content-length", b"3")]


def test_inner_target_strips_the_prefix_and_keeps_escapes_and_query() -> None:
    scope = {"path": "/e2b/a b", "raw_path": b"/e2b/a%20b", "query_string": b"x=1&y=%2F"}
    assert inner_target(scope, "/e2b") == b"/a%20b?x=1&y=%2F"
    assert inner_target({"path": "/e2b", "raw_path": b"/e2b", "query_string": b""}, "/e2b") == b"/"


def _record(token: str) -> SandboxRecord:
    return SandboxRecord(**{**dict.fromkeys(SandboxRecord.__dataclass_fields__), "access_token": token})  # type: ignore[arg-type]


def test_traffic_token_is_per_sandbox_and_not_the_envd_token() -> None:
    one, two = traffic_token(_record("envd-a")), traffic_token(_record("envd-b"))
    assert one != two
    assert one == traffic_token(_record("envd-a"))
    assert "envd-a" not in one
