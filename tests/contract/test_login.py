"""`trove login` by every route, the device-code flow and its approval page (WIRE.md 3.2, 3.3, A18, A23)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from sqlalchemy import update

from tests.support.sdk import cli_env, run_cli
from tests.support.server import LiveServer, start_server
from trove_api.stores.tables import device_codes

TROVE = str(Path(sys.executable).with_name("trove"))


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with start_server(device_poll_interval_s=1, device_start_rate=1000, device_form_rate=1000) as server:
        yield server


def _home_env(live: LiveServer, home: Path) -> dict[str, str]:
    """A private HOME and no TROVE_* client variables: only the saved profile counts."""
    env = cli_env(live, home)
    for name in ("TROVE_API_KEY", "TROVE_WORKSPACE_ID", "TROVE_BASE_URL", "TROVE_NAMESPACE"):
        env.pop(name, None)
    env["BROWSER"] = "true"  # webbrowser.open runs `true URL`: no real browser
    return env


def _profile(home: Path) -> dict[str, Any]:
    config = home / ".trove" / "config.json"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    profile: dict[str, Any] = json.loads(config.read_text())["profiles"]["default"]
    return profile


class PtyCli:
    """The CLI with a pseudo-terminal as its controlling tty (stdin.isatty() is true)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec the CLI at once
            os.execve(TROVE, [TROVE, *args], env)
        self.pid, self.fd, self.output = pid, fd, ""

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], wait)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not chunk:
            return False
        self.output += chunk.decode("utf-8", "replace")
        return True

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output)
            if found:
                return found
            if not self._read(0.1):
                break
        raise AssertionError(f"{pattern!r} not in CLI output: {self.output!r}")

    def send(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                while self._read(0.05):
                    pass
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"CLI did not finish: {self.output!r}")


# -- the key routes -------------------------------------------------------------------------


def test_login_with_api_key_then_whoami(live: LiveServer, tmp_path: Path) -> None:
    env = _home_env(live, tmp_path)
    done = run_cli(["login", "--api-key", live.workspace_key, "--base-url", live.base_url], env)
    assert done.returncode == 0, done.stderr
    assert "saved profile 'default'" in done.stdout
    assert f"workspace={live.workspace_id}" in done.stdout
    assert "scope=workspace" in done.stdout
    assert _profile(tmp_path)["workspace_id"] == live.workspace_id
    who = run_cli(["whoami"], env)
    assert who.returncode == 0, who.stderr
    assert f"workspace       : {live.workspace_id}" in who.stdout
    assert "scope           : workspace" in who.stdout
    assert "key name        : workspace" in who.stdout


def test_login_with_admin_key_shows_admin_scope(live: LiveServer, tmp_path: Path) -> None:
    env = _home_env(live, tmp_path)
    done = run_cli(["login", "--api-key", live.admin_key, "--base-url", live.base_url], env)
    assert done.returncode == 0, done.stderr
    assert "scope=admin" in done.stdout


def test_login_from_piped_stdin(live: LiveServer, tmp_path: Path) -> None:
    env = _home_env(live, tmp_path)
    args = ["login", "--base-url", live.base_url, "--namespace", "n1"]
    done = run_cli(args, env, input=live.workspace_key + "\n")
    assert done.returncode == 0, done.stderr
    profile = _profile(tmp_path)
    assert (profile["api_key"], profile["namespace"]) == (live.workspace_key, "n1")


def test_login_with_bad_key_fails(live: LiveServer, tmp_path: Path) -> None:
    env = _home_env(live, tmp_path)
    done = run_cli(["login", "--api-key", "trove-sk-" + "x" * 40, "--base-url", live.base_url], env)
    assert done.returncode == 1
    assert "auth failed (401)" in done.stderr


def test_login_no_browser_prompt(live: LiveServer, tmp_path: Path) -> None:
    cli = PtyCli(["login", "--no-browser", "--base-url", live.base_url], _home_env(live, tmp_path))
    cli.expect("API key")
    cli.send(live.workspace_key)
    assert cli.wait() == 0, cli.output
    assert "saved profile 'default'" in cli.output
    assert _profile(tmp_path)["api_key"] == live.workspace_key


# -- the device flow --------------------------------------------------------------------------


def test_device_flow_through_the_cli_and_the_approval_page(live: LiveServer, tmp_path: Path) -> None:
    env = _home_env(live, tmp_path)
    cli = PtyCli(["login", "--base-url", live.base_url], env)
    code = cli.expect(r"Code: ([A-Z0-9]{4}-[A-Z0-9]{4})").group(1)
    url = cli.expect(r"URL:\s+(\S+)").group(1)
    assert url == f"{live.base_url}/cli?code={code}"
    page = httpx.get(url)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert code in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    approved = httpx.post(
        f"{live.base_url}/cli",
        data={"user_code": code, "api_key": live.admin_key, "namespace": "from-browser", "action": "approve"},
    )
    assert approved.status_code == 200, approved.text
    assert "authorized" in approved.text
    assert cli.wait() == 0, cli.output
    assert "saved profile 'default'" in cli.output
    profile = _profile(tmp_path)
    assert profile["api_key"].startswith("trove-sk-")
    assert not profile["api_key"].startswith("trove-sk-admin-")
    assert (profile["workspace_id"], profile["namespace"]) == (live.workspace_id, "from-browser")
    who = run_cli(["whoami"], env)
    assert "scope           : workspace" in who.stdout
    assert "namespace lock  : from-browser" in who.stdout


def _start(live: LiveServer) -> dict[str, Any]:
    response = httpx.post(f"{live.base_url}/v1/auth/device/start")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _poll(live: LiveServer, device_code: str) -> dict[str, Any]:
    response = httpx.post(f"{live.base_url}/v1/auth/device/poll", json={"device_code": device_code})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_start_shape(live: LiveServer) -> None:
    started = _start(live)
    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", started["user_code"])
    assert started["verification_uri"] == f"{live.base_url}/cli"
    assert started["verification_uri_complete"] == f"{live.base_url}/cli?code={started['user_code']}"
    assert (started["interval"], started["expires_in"]) == (1, 600)
    assert len(started["device_code"]) >= 32


def test_approval_is_single_use(live: LiveServer) -> None:
    started = _start(live)
    assert _poll(live, started["device_code"]) == {"status": "pending"}
    approve = httpx.post(
        f"{live.base_url}/v1/auth/device/approve",
        json={"user_code": started["user_code"].lower().replace("-", ""), "name": "laptop"},
        headers={"Authorization": f"Bearer {live.admin_key}"},
    )
    assert approve.status_code == 200, approve.text
    answer = _poll(live, started["device_code"])
    assert answer["status"] == "approved"
    assert answer["workspace_id"] == live.workspace_id
    me = httpx.get(f"{live.base_url}/v1/me", headers={"Authorization": f"Bearer {answer['api_key']}"}).json()
    # No namespace named: the key is locked to the default namespace.
    assert (me["scope"], me["key_name"], me["namespace"]) == ("workspace", "laptop", "default")
    assert approve.json()["namespace"] == "default"
    assert _poll(live, started["device_code"]) == {"status": "expired"}
    again = httpx.post(
        f"{live.base_url}/v1/auth/device/approve",
        json={"user_code": started["user_code"]},
        headers={"Authorization": f"Bearer {live.admin_key}"},
    )
    assert again.status_code == 400


def test_deny_through_the_page(live: LiveServer) -> None:
    started = _start(live)
    denied = httpx.post(
        f"{live.base_url}/cli",
        data={"user_code": started["user_code"], "api_key": live.admin_key, "action": "deny"},
    )
    assert denied.status_code == 200
    assert "denied" in denied.text
    assert _poll(live, started["device_code"]) == {"status": "denied"}


def test_page_refuses_bad_keys_and_codes(live: LiveServer) -> None:
    started = _start(live)
    cases = [
        ({"api_key": "trove-sk-" + "y" * 40}, 401),
        ({"api_key": live.workspace_key}, 403),
        ({"api_key": live.admin_key, "user_code": "BBBB-2222"}, 400),
        ({"api_key": live.admin_key, "namespace": "bad ns!"}, 400),
    ]
    for fields, status in cases:
        form = {"user_code": started["user_code"], "action": "approve", **fields}
        response = httpx.post(f"{live.base_url}/cli", data=form)
        assert response.status_code == status, (fields, response.text)
        assert "<form" in response.text
    assert _poll(live, started["device_code"]) == {"status": "pending"}
    escaped = httpx.get(f"{live.base_url}/cli", params={"code": '"><script>x</script>'})
    assert "<script>x" not in escaped.text


def test_codes_expire(live: LiveServer) -> None:
    started = _start(live)
    with live.ctx.db.write() as conn:
        conn.execute(
            update(device_codes)
            .where(device_codes.c.user_code == started["user_code"])
            .values(expires_at=0.0)
        )
    assert _poll(live, started["device_code"]) == {"status": "expired"}
    late = httpx.post(
        f"{live.base_url}/cli",
        data={"user_code": started["user_code"], "api_key": live.admin_key, "action": "approve"},
    )
    assert late.status_code == 400
    assert _poll(live, "never-issued") == {"status": "expired"}


def test_rate_limits_never_touch_polling(tmp_path: Path) -> None:
    with start_server(device_poll_interval_s=1, device_start_rate=3, device_form_rate=2) as small:
        flows = [_start(small) for _ in range(3)]
        refused = httpx.post(f"{small.base_url}/v1/auth/device/start")
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert isinstance(refused.json()["detail"], str)
        # Polling far faster than the advertised interval is still answered.
        for _ in range(10):
            for flow in flows:
                assert _poll(small, flow["device_code"])["status"] == "pending"
        form = {"user_code": flows[0]["user_code"], "api_key": "trove-sk-" + "z" * 40, "action": "approve"}
        statuses = [httpx.post(f"{small.base_url}/cli", data=form).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]


def _approve_json(live: LiveServer, user_code: str, **fields: Any) -> httpx.Response:
    return httpx.post(
        f"{live.base_url}/v1/auth/device/approve",
        json={"user_code": user_code, **fields},
        headers={"Authorization": f"Bearer {live.admin_key}"},
    )


def _me(live: LiveServer, key: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(
        f"{live.base_url}/v1/me", headers={"Authorization": f"Bearer {key}"}
    ).json()
    return body


def _database_bytes(live: LiveServer) -> bytes:
    """Everything a database reader could see: the SQLite file and its journal."""
    return b"".join(p.read_bytes() for p in live.data_dir.glob("trove.db*") if p.is_file())


def test_an_approved_key_never_waits_in_the_database_in_the_clear(live: LiveServer) -> None:
    started = _start(live)
    assert _approve_json(live, started["user_code"], namespace="dbread").status_code == 200
    before_poll = _database_bytes(live)
    with live.ctx.db.read() as conn:
        row = (
            conn.execute(
                sqlalchemy.select(device_codes).where(device_codes.c.user_code == started["user_code"])
            )
            .mappings()
            .one()
        )
    answer = _poll(live, started["device_code"])
    assert answer["status"] == "approved"
    key = answer["api_key"]
    assert key.encode() not in before_poll
    assert key not in json.dumps(dict(row), default=str)
    assert key.encode() not in _database_bytes(live)
    assert _me(live, key)["namespace"] == "dbread"


def test_the_page_shows_who_asked_and_when(live: LiveServer) -> None:
    started = _start(live)
    page = httpx.get(f"{live.base_url}/cli", params={"code": started["user_code"]})
    assert page.status_code == 200
    assert "Requested from <code>127.0.0.1</code>" in page.text
    assert re.search(r"<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>", page.text)
    unknown = httpx.get(f"{live.base_url}/cli", params={"code": "BBBB-2222"})
    assert "Requested from" not in unknown.text


def test_page_approval_defaults_to_a_namespace_lock(live: LiveServer) -> None:
    page = httpx.get(f"{live.base_url}/cli")
    assert 'name=namespace value="default"' in page.text
    locked, unlocked = _start(live), _start(live)
    for flow, fields in ((locked, {}), (unlocked, {"namespace": "", "all_namespaces": "on"})):
        form = {"user_code": flow["user_code"], "api_key": live.admin_key, "action": "approve", **fields}
        assert httpx.post(f"{live.base_url}/cli", data=form).status_code == 200
    assert _me(live, _poll(live, locked["device_code"])["api_key"])["namespace"] == "default"
    assert _me(live, _poll(live, unlocked["device_code"])["api_key"])["namespace"] is None


def test_json_approval_can_still_mint_an_unlocked_key(live: LiveServer) -> None:
    started = _start(live)
    approved = _approve_json(live, started["user_code"], all_namespaces=True)
    assert approved.status_code == 200, approved.text
    assert approved.json()["namespace"] is None
    key = _poll(live, started["device_code"])["api_key"]
    assert _me(live, key)["namespace"] is None
    assert _me(live, key)["key_id"] == approved.json()["key_id"]


def test_cli_login_approved_without_a_namespace_saves_the_default_lock(
    live: LiveServer, tmp_path: Path
) -> None:
    env = _home_env(live, tmp_path)
    cli = PtyCli(["login", "--base-url", live.base_url], env)
    code = cli.expect(r"Code: ([A-Z0-9]{4}-[A-Z0-9]{4})").group(1)
    approved = httpx.post(
        f"{live.base_url}/cli", data={"user_code": code, "api_key": live.admin_key, "action": "approve"}
    )
    assert approved.status_code == 200, approved.text
    assert cli.wait() == 0, cli.output
    assert _profile(tmp_path)["namespace"] == "default"
    assert "namespace lock  : default" in run_cli(["whoami"], env).stdout
