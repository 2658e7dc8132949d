"""Lone surrogates in JSON text fields: every request schema answers 400 problem+json, never 500.

JSON can spell a lone surrogate ("\\ud800"), which Python decodes into a str that cannot be
encoded as UTF-8, so it breaks whatever later hands the text to a process, a file or the database.
The bodies are sent as literal JSON text: httpx would refuse to encode such a str itself.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.hostile.helpers import assert_problem, raw_client
from tests.support.server import LiveServer

LONE = "\\ud800"  # JSON spelling of a lone high surrogate
LOW = "x\\udfffy"  # and a lone low one inside other text


def _send(http: httpx.Client, method: str, url: str, body: str) -> httpx.Response:
    return http.request(method, url, content=body.encode(), headers={"Content-Type": "application/json"})


def _fs(server: LiveServer, namespace: str) -> httpx.Client:
    return raw_client(server, namespace)


def _admin(server: LiveServer) -> httpx.Client:
    return raw_client(server, key=server.admin_key)


# (client factory, method, url template, JSON body template with {s} for the bad string)
CASES: list[tuple[str, str, str, str]] = [
    ("fs", "POST", "/v1/exec", '{"command": "echo {s}"}'),
    ("fs", "POST", "/exec", '{"command": "echo {s}"}'),
    ("fs", "POST", "/v1/exec", '{"command": "cat", "stdin": "{s}"}'),
    ("fs", "POST", "/write", '{"path": "t.txt", "content": "{s}"}'),
    ("fs", "POST", "/v1/snapshots", '{"label": "{s}"}'),
    ("admin", "POST", "/v1/workspaces/{ws}/keys", '{"name": "{s}"}'),
    ("admin", "POST", "/v1/workspaces/{ws}/keys", '{"name": "k", "namespace": "{s}"}'),
    ("admin", "POST", "/v1/workspaces/{ws}/webhooks", '{"url": "https://example.com/{s}"}'),
    ("admin", "POST", "/v1/workspaces/{ws}/webhooks", '{"url": "https://{s}.example.com/"}'),
    ("admin", "POST", "/v1/workspaces/{ws}/webhooks", '{"url": "https://example.com/", "events": ["{s}"]}'),
    (
        "admin",
        "POST",
        "/v1/workspaces/{ws}/webhooks",
        '{"url": "https://example.com/", "description": "{s}"}',
    ),
    ("admin", "POST", "/v1/workspaces/{ws}/webhooks", '{"url": "https://example.com/", "namespace": "{s}"}'),
    ("none", "POST", "/v1/auth/device/poll", '{"device_code": "{s}"}'),
    ("admin", "POST", "/v1/auth/device/approve", '{"user_code": "{s}"}'),
    ("admin", "POST", "/v1/auth/device/approve", '{"user_code": "ABCD-EFGH", "name": "{s}"}'),
    ("admin", "POST", "/v1/auth/device/approve", '{"user_code": "ABCD-EFGH", "namespace": "{s}"}'),
    ("admin", "POST", "/v1/auth/device/deny", '{"user_code": "{s}"}'),
]


@pytest.mark.parametrize("bad", [LONE, LOW])
@pytest.mark.parametrize(("who", "method", "url", "body"), CASES)
def test_lone_surrogates_in_text_fields_answer_400(
    hostile: LiveServer, namespace: str, who: str, method: str, url: str, body: str, bad: str
) -> None:
    makers: dict[str, Callable[[], httpx.Client]] = {
        "fs": lambda: _fs(hostile, namespace),
        "admin": lambda: _admin(hostile),
        "none": lambda: httpx.Client(base_url=hostile.base_url, timeout=60),
    }
    with makers[who]() as http:
        response = _send(http, method, url.replace("{ws}", hostile.workspace_id), body.replace("{s}", bad))
        problem = assert_problem(response, 400, "invalid_unicode")
        assert "surrogate" in str(problem["detail"])
        # The server is fine afterwards, and nothing was half-done.
        if who == "fs":
            assert http.get("/v1/files", params={"path": "workspace/"}).json()["entries"] == []


@pytest.mark.parametrize("url", ["/v1/exec", "/exec"])
def test_a_nul_byte_in_a_command_answers_422_not_500(hostile: LiveServer, namespace: str, url: str) -> None:
    # Found by schemathesis: the NUL reached the process spawn ("embedded null byte") as a 500.
    with _fs(hostile, namespace) as http:
        response = _send(http, "POST", url, '{"command": "echo a\\u0000b"}')
        problem = assert_problem(response, 422, "invalid_request")
        assert "NUL" in str(problem["detail"])
        # stdin is piped, not an argument: a NUL there is plain data.
        ok = _send(http, "POST", "/v1/exec", '{"command": "od -c", "stdin": "a\\u0000b"}')
        assert ok.status_code == 200, ok.text
        assert "\\0" in ok.json()["stdout"]
