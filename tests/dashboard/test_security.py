"""The dashboard's sign-in, cookies and CSRF checked with raw requests (what a browser hides)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from typing import Any, TypeVar

import httpx
import pytest

from tests.support.sdk import admin, client
from tests.support.server import LiveServer, start_server
from trove_api.services.dashboard_sessions import DashboardSessions, load_secret

T = TypeVar("T")
CSRF_IN_PAGE = re.compile(r'data-csrf="([^"]+)"')


def _login_token(http: httpx.Client) -> str:
    page = http.get("/dashboard/login")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def sign_in(http: httpx.Client, api_key: str, **headers: str) -> httpx.Response:
    token = _login_token(http)
    return http.post(
        "/dashboard/login", data={"csrf": token, "api_key": api_key, "next": "/dashboard"}, headers=headers
    )


def page_csrf(http: httpx.Client) -> str:
    found = CSRF_IN_PAGE.search(http.get("/dashboard/namespaces").text)
    assert found
    return found.group(1)


@pytest.fixture
def admin_http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url) as http:
        assert sign_in(http, server.admin_key).status_code == 303
        yield http


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a thread of its own: Playwright's sync API owns this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _session_cookie(response: httpx.Response) -> SimpleCookie:
    cookies = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        if header.startswith("trove_session="):
            cookies.load(header)
    return cookies


def test_session_cookie_flags(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url) as http:
        answer = sign_in(http, server.admin_key)
    assert answer.status_code == 303
    raw = next(h for h in answer.headers.get_list("set-cookie") if h.startswith("trove_session="))
    cookie = _session_cookie(answer)["trove_session"]
    assert "httponly" in raw.lower()
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/"
    assert int(cookie["max-age"]) == server.settings.dashboard_session_ttl_s
    assert "secure" not in raw.lower()  # plain http on loopback: a Secure cookie would never come back
    assert server.admin_key not in raw  # the key itself never travels in the cookie


def test_session_cookie_is_secure_behind_tls(server: LiveServer) -> None:
    # 127.0.0.1 is a trusted proxy by default: its X-Forwarded-Proto makes the request https.
    with httpx.Client(base_url=server.base_url) as http:
        answer = sign_in(http, server.admin_key, **{"X-Forwarded-Proto": "https"})
    raw = next(h for h in answer.headers.get_list("set-cookie") if h.startswith("trove_session="))
    assert "secure" in raw.lower()


def test_sign_in_refuses_a_form_without_its_csrf_token(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url) as http:
        answer = http.post("/dashboard/login", data={"api_key": server.admin_key, "csrf": "forged"})
        _login_token(http)  # the cookie half is set now; the form half must still match it
        for forged in ("forged", "é"):
            wrong = http.post("/dashboard/login", data={"api_key": server.admin_key, "csrf": forged})
            assert wrong.status_code == 403
            assert not _session_cookie(wrong)
    assert answer.status_code == 403
    assert "csrf_rejected" in answer.text
    assert not _session_cookie(answer)


def test_a_tampered_cookie_is_a_sign_in_page_never_a_crash(server: LiveServer) -> None:
    for cookie in ("é.é", "e30." + "é" * 43, "x" * 600):
        answer = httpx.get(
            f"{server.base_url}/dashboard/namespaces", headers={"cookie": f"trove_session={cookie}".encode()}
        )
        assert answer.status_code == 303, cookie


def test_every_form_needs_the_sessions_csrf_token(server: LiveServer, admin_http: httpx.Client) -> None:
    with admin(server) as adm:
        before = len(adm.list_keys())
    with httpx.Client(base_url=server.base_url) as other:
        sign_in(other, server.admin_key)
        someone_elses = page_csrf(other)
    for form in (
        {"name": "no-token"},
        {"name": "bad", "csrf": "x" * 43},
        {"name": "x", "csrf": someone_elses},
        {"name": "not-ascii", "csrf": "é" * 43},
    ):
        refused = admin_http.post("/dashboard/keys", data=form)
        assert refused.status_code == 403, form
        assert "csrf_rejected" in refused.text
    with admin(server) as adm:
        assert len(adm.list_keys()) == before
    accepted = admin_http.post("/dashboard/keys", data={"name": "with-token", "csrf": page_csrf(admin_http)})
    assert accepted.status_code == 200
    assert "trove-sk-" in accepted.text


def test_upload_and_deletes_need_the_token_too(
    server: LiveServer, admin_http: httpx.Client, namespace: str
) -> None:
    with client(server, namespace) as sdk:
        sdk.write("workspace/keep.txt", "keep")
    upload = admin_http.put(
        f"/dashboard/namespaces/{namespace}/upload", params={"path": "workspace/evil.txt"}, content=b"x"
    )
    assert upload.status_code == 403
    delete = admin_http.post(f"/dashboard/namespaces/{namespace}/delete", data={"path": "workspace/keep.txt"})
    assert delete.status_code == 403
    snapshot = admin_http.post(f"/dashboard/namespaces/{namespace}/snapshots", data={"label": "x"})
    assert snapshot.status_code == 403
    with client(server, namespace) as sdk:
        assert [e.path for e in sdk.list_dir()] == ["workspace/keep.txt"]
        assert sdk.list_snapshots() == []


def test_device_approval_by_session_needs_csrf_and_an_admin(
    server: LiveServer, admin_http: httpx.Client
) -> None:
    code = httpx.post(f"{server.base_url}/v1/auth/device/start").json()["user_code"]
    no_one = httpx.post(f"{server.base_url}/cli", data={"user_code": code, "action": "approve"})
    assert no_one.status_code == 401
    no_token = admin_http.post("/cli", data={"user_code": code, "action": "approve"})
    assert no_token.status_code == 403
    assert "CSRF" in no_token.text
    with httpx.Client(base_url=server.base_url) as workspace:
        sign_in(workspace, server.workspace_key)
        token = page_csrf(workspace)
        refused = workspace.post("/cli", data={"user_code": code, "action": "approve", "csrf": token})
    assert refused.status_code == 403
    page = admin_http.get("/cli", params={"code": code})
    token = re.search(r'name=csrf value="([^"]+)"', page.text)
    assert token
    approved = admin_http.post("/cli", data={"user_code": code, "action": "approve", "csrf": token.group(1)})
    assert approved.status_code == 200
    assert "CLI authorized" in approved.text


def test_sessions_end_on_expiry_forgery_revocation_and_sign_out(server: LiveServer) -> None:
    with admin(server) as adm:
        doomed = adm.create_key("dash-doomed")
    secret = load_secret(None, server.data_dir)  # what the server signs with (no TROVE_DASHBOARD_SECRET)
    expired = DashboardSessions(server.ctx.db, secret, ttl_s=-10)
    stale_cookie = _run(expired.sign_in(server.admin_key)).cookie
    live = DashboardSessions(server.ctx.db, secret, ttl_s=600)
    body, _, signature = _run(live.sign_in(server.admin_key)).cookie.partition(".")
    assert (
        httpx.get(
            f"{server.base_url}/dashboard/keys", cookies={"trove_session": f"{body}.{signature}"}
        ).status_code
        == 200
    )
    forged = body + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    for cookie in (stale_cookie, forged, "garbage", ""):
        answer = httpx.get(f"{server.base_url}/dashboard/namespaces", cookies={"trove_session": cookie})
        assert answer.status_code == 303, cookie
        assert answer.headers["location"].startswith("/dashboard/login")
    with httpx.Client(base_url=server.base_url) as http:
        sign_in(http, doomed.api_key)
        assert http.get("/dashboard/namespaces").status_code == 200
        with admin(server) as adm:
            adm.revoke_key(doomed.key_id)
        assert http.get("/dashboard/namespaces").status_code == 303
    with httpx.Client(base_url=server.base_url) as http:
        sign_in(http, server.admin_key)
        copied = http.cookies["trove_session"]
        assert http.post("/dashboard/logout", data={}).status_code == 403  # sign-out is a form too
        out = http.post("/dashboard/logout", data={"csrf": page_csrf(http)})
        assert out.status_code == 303
        assert "trove_session" not in http.cookies
        assert http.get("/dashboard/namespaces").status_code == 303
    # A copy of the cookie taken before the sign-out (a stolen one) is dead too.
    replay = httpx.get(f"{server.base_url}/dashboard/namespaces", cookies={"trove_session": copied})
    assert replay.status_code == 303


def test_workspace_keys_cannot_reach_admin_pages_or_actions(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url) as http:
        sign_in(http, server.workspace_key)
        token = page_csrf(http)
        for path in ("/dashboard/keys", "/dashboard/webhooks", "/dashboard/webhooks/wh-x"):
            answer = http.get(path)
            assert answer.status_code == 403, path
            assert "admin_required" in answer.text
        minted = http.post("/dashboard/keys", data={"name": "sneaky", "admin": "on", "csrf": token})
        assert minted.status_code == 403
        assert http.get("/dashboard").headers["location"] == "/dashboard/namespaces"
    with admin(server) as adm:
        assert "sneaky" not in [k.name for k in adm.list_keys()]


def test_sign_in_never_redirects_off_site(server: LiveServer) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/dashboard//evil.example"):
        with httpx.Client(base_url=server.base_url) as http:
            token = _login_token(http)
            answer = http.post(
                "/dashboard/login", data={"csrf": token, "api_key": server.admin_key, "next": target}
            )
        assert answer.headers["location"] == "/dashboard", target


def test_pages_carry_a_strict_policy_and_files_never_render(
    server: LiveServer, admin_http: httpx.Client, namespace: str
) -> None:
    with client(server, namespace) as sdk:
        sdk.write("workspace/page.html", "<script>alert(1)</script>")
        sdk.write(
            "workspace/pic.svg", "<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
        )
    page = admin_http.get(f"/dashboard/namespaces/{namespace}", params={"file": "workspace/page.html"})
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "<script>alert(1)</script>" not in page.text  # escaped in the preview
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    download = admin_http.get(
        f"/dashboard/namespaces/{namespace}/download", params={"path": "workspace/page.html"}
    )
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.headers["content-type"] == "application/octet-stream"
    svg = admin_http.get(f"/dashboard/namespaces/{namespace}/image", params={"path": "workspace/pic.svg"})
    assert svg.status_code == 400


def test_guessing_keys_is_slowed_and_then_refused_even_for_a_right_key() -> None:
    with start_server(device_form_rate=2) as small, httpx.Client(base_url=small.base_url) as http:
        wrong = "trove-sk-" + "z" * 43
        statuses = [sign_in(http, wrong).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
        blocked = sign_in(http, small.admin_key)
        assert blocked.status_code == 429
        assert blocked.headers["retry-after"]
        assert not _session_cookie(blocked)
