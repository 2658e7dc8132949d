"""Schemathesis against the live server's own OpenAPI document: no input yields a 5xx.

Every operation of ``/openapi.json`` gets ~25 generated requests (deterministic: derandomized
Hypothesis). Filesystem calls authenticate with a workspace key and mostly name a valid
namespace, so generation reaches the handlers rather than stopping at auth; operations under
``/v1/workspaces/{workspace_id}`` use the admin key and, half of the time, the real workspace id.
(The schemathesis pytest loader ``from_fixture`` does not run under this pytest version, so
the test drives each operation's Hypothesis strategy itself.)
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.support.server import LiveServer

FUZZ_NAMESPACE = "schemathesis-fuzz"
EXAMPLES_PER_OPERATION = 25


def _prepare(case: Any, server: LiveServer) -> None:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    path_parameters = case.path_parameters or {}
    if "workspace_id" in path_parameters:
        headers["Authorization"] = f"Bearer {server.admin_key}"
        if len(repr(case.body)) % 2 == 0:
            path_parameters["workspace_id"] = server.workspace_id
    else:
        headers["Authorization"] = f"Bearer {server.workspace_key}"
    generated = next((k for k in headers if k.lower() == "x-namespace"), None)
    if generated is None or len(str(headers[generated])) % 3:
        if generated is not None:
            del headers[generated]
        headers["X-Namespace"] = FUZZ_NAMESPACE
    case.headers = headers


def _check(case: Any, server: LiveServer) -> None:
    _prepare(case, server)
    response = case.call(timeout=60)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400 and case.method.upper() != "HEAD":
        # Every error is problem+json with a string detail (the official client prints it).
        content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [""])
        assert content_type[0].startswith("application/problem+json"), response.text
        body = response.json()
        assert isinstance(body["detail"], str), body
        assert body["code"], body
        assert body["request_id"], body


def test_no_server_errors(hostile: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{hostile.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            _check(case, hostile)

        run()
