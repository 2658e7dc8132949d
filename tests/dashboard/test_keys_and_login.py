"""Keys and webhooks from the dashboard, and the device login (`/cli`) approved with its sign-in."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from trove_sdk import TroveAuthError

from tests.contract.test_login import PtyCli, _home_env
from tests.dashboard.conftest import new_context, sign_in
from tests.support.receiver import Receiver, run_receiver
from tests.support.sdk import client, run_cli
from tests.support.server import LiveServer, start_server

Shoot = Callable[[Page, str], Path]


def test_mint_use_and_revoke_a_key(
    admin_page: Page, server: LiveServer, namespace: str, shoot: Shoot
) -> None:
    admin_page.goto(f"{server.base_url}/dashboard/keys")
    admin_page.get_by_label("Name", exact=True).fill("from-the-dashboard")
    admin_page.get_by_label("Lock to namespace (optional)").fill(namespace)
    admin_page.get_by_role("button", name="Mint a key").click()
    secret = admin_page.get_by_label("The new key").input_value()
    assert secret.startswith("trove-sk-")
    assert not secret.startswith("trove-sk-admin-")
    admin_page.get_by_role("button", name="Copy").click()
    expect(admin_page.get_by_role("button", name="Copied")).to_be_visible()
    shoot(admin_page, "key-minted")
    with client(server, namespace, api_key=secret) as sdk:
        sdk.write("workspace/by-new-key.txt", "ok")
        assert sdk.read_text("workspace/by-new-key.txt") == "ok"
    admin_page.goto(f"{server.base_url}/dashboard/keys")  # the secret is never shown again
    expect(admin_page.get_by_label("The new key")).to_have_count(0)
    assert secret not in admin_page.content()
    admin_page.get_by_role("button", name="Revoke from-the-dashboard").click()
    expect(admin_page.locator("#flash")).to_contain_text("Key revoked")
    with client(server, namespace, api_key=secret) as sdk, pytest.raises(TroveAuthError):
        sdk.read_text("workspace/by-new-key.txt")
    shoot(admin_page, "keys")


def test_device_login_from_the_cli_approved_in_the_signed_in_dashboard(
    admin_page: Page, server: LiveServer, tmp_path: Path, shoot: Shoot
) -> None:
    env = _home_env(server, tmp_path)
    cli = PtyCli(["login", "--base-url", server.base_url], env)
    code = cli.expect(r"Code: ([A-Z0-9]{4}-[A-Z0-9]{4})").group(1)
    url = cli.expect(r"URL:\s+(\S+)").group(1)
    admin_page.goto(url)
    expect(admin_page.get_by_text("Signed in to the dashboard as")).to_be_visible()
    expect(admin_page.get_by_label("Admin key of the workspace")).to_have_count(0)
    expect(admin_page.get_by_label("Code shown in your terminal")).to_have_value(code)
    admin_page.get_by_label("Namespace the new key is locked to").fill("from-dashboard")
    shoot(admin_page, "cli-approval")
    admin_page.get_by_role("button", name="Approve").click()
    expect(admin_page.get_by_role("heading", name="CLI authorized")).to_be_visible()
    assert cli.wait() == 0, cli.output
    profile = json.loads((tmp_path / ".trove" / "config.json").read_text())["profiles"]["default"]
    assert profile["namespace"] == "from-dashboard"
    who = run_cli(["whoami"], env)
    assert who.returncode == 0, who.stderr
    assert "from-dashboard" in who.stdout


def test_cli_page_without_a_sign_in_offers_one(fresh_page: Page, server: LiveServer) -> None:
    fresh_page.goto(f"{server.base_url}/cli?code=ABCD-1234")
    expect(fresh_page.get_by_label("Admin key of the workspace")).to_be_visible()
    fresh_page.get_by_role("link", name="sign in to the dashboard").click()
    fresh_page.get_by_label("API key").fill(server.admin_key)
    fresh_page.get_by_role("button", name="Sign in").click()
    expect(fresh_page).to_have_url(f"{server.base_url}/cli?code=ABCD-1234")
    expect(fresh_page.get_by_text("Signed in to the dashboard as")).to_be_visible()


@pytest.fixture(scope="module")
def hook_server() -> Iterator[LiveServer]:
    """Webhooks to a receiver on loopback need private targets allowed."""
    with start_server(webhook_allow_private=True) as live:
        yield live


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with run_receiver() as live:
        yield live


def test_webhook_create_test_log_retry_rotate_delete(
    browser: Browser, hook_server: LiveServer, receiver: Receiver, shoot: Shoot
) -> None:
    context = new_context(browser)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, hook_server.base_url, hook_server.admin_key)
    page.goto(f"{hook_server.base_url}/dashboard/webhooks")
    page.get_by_label("URL", exact=True).fill(receiver.url)
    page.get_by_label("file.written").check()
    page.get_by_role("button", name="Create webhook").click()
    first_secret = page.get_by_label("Signing secret").input_value()
    assert first_secret.startswith("trove-whsec-")
    shoot(page, "webhooks")
    page.get_by_role("link", name=receiver.url).click()
    page.get_by_role("button", name="Send a test event").click()
    expect(page.locator("#test-result")).to_contain_text("delivered (200)")
    with client(hook_server, "hooked") as sdk:
        sdk.write("workspace/x.txt", "x")
    receiver.wait_for(lambda got: len(got) >= 2)
    page.reload()
    rows = page.locator("table tbody tr")
    expect(rows.filter(has_text="file.written")).to_have_count(1)
    expect(rows.filter(has_text="webhook.test").first).to_be_visible()
    shoot(page, "webhook")
    rows.filter(has_text="file.written").get_by_role("link").click()
    expect(page.locator("table tbody tr").first).to_contain_text("200")
    shoot(page, "delivery")
    page.get_by_role("button", name="Retry this delivery").click()
    expect(page.locator("#flash")).to_have_text("Delivery queued again.")
    receiver.wait_for(lambda got: len(got) >= 3)
    page.get_by_role("button", name="Rotate the secret").click()
    rotated = page.get_by_label("New signing secret").input_value()
    assert rotated.startswith("trove-whsec-")
    assert rotated != first_secret
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    expect(page.get_by_text("No webhooks.")).to_be_visible()
    context.close()
