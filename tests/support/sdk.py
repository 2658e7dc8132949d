"""Client factories: the official trove-sdk pointed at a LiveServer, and the trove CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from trove_sdk import AsyncTroveClient, TroveAdminClient, TroveClient

from tests.support.server import LiveServer


def client(server: LiveServer, namespace: str, api_key: str | None = None) -> TroveClient:
    return TroveClient(api_key=api_key or server.workspace_key, namespace=namespace, base_url=server.base_url)


def async_client(server: LiveServer, namespace: str, api_key: str | None = None) -> AsyncTroveClient:
    return AsyncTroveClient(
        api_key=api_key or server.workspace_key, namespace=namespace, base_url=server.base_url
    )


def admin(server: LiveServer, api_key: str | None = None) -> TroveAdminClient:
    return TroveAdminClient(
        api_key=api_key or server.admin_key,
        workspace_id=server.workspace_id,
        base_url=server.base_url,
    )


def cli_env(
    server: LiveServer, home: Path, *, api_key: str | None = None, namespace: str | None = None
) -> dict[str, str]:
    """Environment for the official ``trove`` CLI (env profile, private HOME)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROVE_")}
    env.update(
        HOME=str(home),
        TROVE_API_KEY=api_key or server.workspace_key,
        TROVE_WORKSPACE_ID=server.workspace_id,
        TROVE_BASE_URL=server.base_url,
        NO_COLOR="1",
        COLUMNS="200",
    )
    if namespace is not None:
        env["TROVE_NAMESPACE"] = namespace
    return env


def run_cli(
    args: Sequence[str], env: dict[str, str], *, input: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    trove = Path(sys.executable).with_name("trove")
    return subprocess.run(
        [str(trove), *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
