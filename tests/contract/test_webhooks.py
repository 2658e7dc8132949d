"""Webhook management through the official SDK and `trove webhooks …` (E19–E22, WIRE.md 7.26–7.30, 7.40)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from trove_sdk import TroveAuthError, TroveError, TroveNotFoundError

from tests.support.receiver import Receiver, run_receiver
from tests.support.sdk import admin, cli_env, run_cli
from tests.support.server import LiveServer, start_server


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with start_server(webhook_allow_private=True, webhook_poll_interval_s=0.2) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with run_receiver() as rcv:
        yield rcv


def test_create_list_test_delete(live: LiveServer, receiver: Receiver) -> None:
    with admin(live) as a:
        created = a.create_webhook(receiver.url, description="ci hook")
        assert created.webhook_id.startswith("wh-")
        assert created.signing_secret.startswith("trove-whsec-")
        assert created.events == ["*"]
        assert (created.namespace, created.description, created.enabled) == (None, "ci hook", True)
        listed = {w.webhook_id: w for w in a.list_webhooks()}
        assert listed[created.webhook_id].url == receiver.url
        result = a.test_webhook(created.webhook_id)
        assert result.ok
        assert result.status == 200
        assert result.event_id.startswith("evt-")
        assert result.error is None
        [req] = receiver.of_type("webhook.test")
        body = json.loads(req.body)
        assert body["id"] == result.event_id
        assert body["data"]["message"]
        a.delete_webhook(created.webhook_id)
        assert created.webhook_id not in {w.webhook_id for w in a.list_webhooks()}
        with pytest.raises(TroveNotFoundError):
            a.delete_webhook(created.webhook_id)
        with pytest.raises(TroveNotFoundError):
            a.test_webhook(created.webhook_id)
    # webhook.test is also in the event feed.
    feed = httpx.get(
        f"{live.base_url}/v1/workspaces/{live.workspace_id}/events",
        params={"types": "webhook.test"},
        headers={"Authorization": f"Bearer {live.admin_key}"},
    ).json()["events"]
    assert result.event_id in {e["id"] for e in feed}


def test_test_reports_dead_receiver(live: LiveServer) -> None:
    with run_receiver() as rcv:
        url = rcv.url
    with admin(live) as a:
        hook = a.create_webhook(url)
        result = a.test_webhook(hook.webhook_id)
        assert not result.ok
        assert result.status is None
        assert result.error
        listed = next(w for w in a.list_webhooks() if w.webhook_id == hook.webhook_id)
        assert listed.enabled
        a.delete_webhook(hook.webhook_id)


def test_test_reports_receiver_status(live: LiveServer) -> None:
    with run_receiver(default=418) as rcv, admin(live) as a:
        hook = a.create_webhook(rcv.url)
        result = a.test_webhook(hook.webhook_id)
        assert (result.ok, result.status) == (False, 418)
        a.delete_webhook(hook.webhook_id)


@pytest.mark.parametrize(
    ("url", "events"),
    [("ftp://127.0.0.1/x", None), ("127.0.0.1/x", None), ("http://127.0.0.1/x", ["file.exploded"])],
)
def test_invalid_create_is_422(live: LiveServer, url: str, events: list[str] | None) -> None:
    with admin(live) as a, pytest.raises(TroveError) as info:
        a.create_webhook(url, events=events)
    assert info.value.status_code == 422
    assert isinstance(str(info.value), str)


def test_workspace_key_cannot_manage(live: LiveServer) -> None:
    with admin(live, api_key=live.workspace_key) as a, pytest.raises(TroveAuthError):
        a.create_webhook("http://127.0.0.1/x")


def test_private_target_refused_by_default(server: LiveServer) -> None:
    """The session server keeps TROVE_WEBHOOK_ALLOW_PRIVATE off: loopback is refused at delivery."""
    with run_receiver() as rcv, admin(server) as a:
        hook = a.create_webhook(rcv.url)
        result = a.test_webhook(hook.webhook_id)
        assert not result.ok
        assert "private" in (result.error or "")
        assert rcv.requests == []
        a.delete_webhook(hook.webhook_id)


def test_cli_webhooks_commands(live: LiveServer, receiver: Receiver, tmp_path: Path) -> None:
    env = cli_env(live, tmp_path, api_key=live.admin_key)
    made = run_cli(
        ["webhooks", "create", receiver.url, "--events", "file.written,exec.completed", "--json"], env
    )
    assert made.returncode == 0, made.stderr
    body = json.loads(made.stdout)
    hook_id = body["webhook_id"]
    assert body["events"] == ["file.written", "exec.completed"]
    assert body["signing_secret"].startswith("trove-whsec-")
    human = run_cli(["webhooks", "create", receiver.url, "--namespace", "ns-x", "--description", "d"], env)
    assert human.returncode == 0, human.stderr
    assert "signing_secret : trove-whsec-" in human.stdout
    second_id = next(
        line.split(":", 1)[1].strip() for line in human.stdout.splitlines() if "webhook_id" in line
    )

    tested = run_cli(["webhooks", "test", hook_id], env)
    assert tested.returncode == 0, tested.stderr
    assert "delivered" in tested.stdout
    assert "status=200" in tested.stdout
    listed = run_cli(["webhooks", "list"], env)
    assert listed.returncode == 0, listed.stderr
    assert hook_id in listed.stdout
    assert "last delivery" in listed.stdout
    assert "ns-x" in listed.stdout
    as_json = json.loads(run_cli(["webhooks", "list", "--json"], env).stdout)
    assert {hook_id, second_id} <= {w["webhook_id"] for w in as_json["webhooks"]}

    for wid in (hook_id, second_id):
        gone = run_cli(["webhooks", "delete", wid, "-y"], env)
        assert gone.returncode == 0, gone.stderr
    again = run_cli(["webhooks", "delete", hook_id, "-y"], env)
    assert again.returncode == 1
    assert "webhook not found" in again.stderr
    missing = run_cli(["webhooks", "test", "wh-missing"], env)
    assert "webhook not found" in missing.stderr
    denied = run_cli(["webhooks", "list"], cli_env(live, tmp_path))
    assert denied.returncode == 2
