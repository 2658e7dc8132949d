"""The official ``trove`` CLI (subprocess, private HOME): login, whoami, doctor, run, file verbs, keys."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from trove_sdk import KeyCreated

from tests.support.sdk import cli_env, client, run_cli
from tests.support.server import LiveServer

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(server: LiveServer, namespace: str, tmp_path: Path) -> Cli:
    """``trove`` with the env profile (workspace key, fresh namespace) and a private HOME."""

    def invoke(
        *args: str, input: str | None = None, api_key: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = cli_env(server, tmp_path, api_key=api_key, namespace=namespace)
        return run_cli(list(args), env, input=input)

    return invoke


def bare_env(home: Path) -> dict[str, str]:
    """No TROVE_* at all: commands use the profile saved under ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROVE_")}
    env.update(HOME=str(home), NO_COLOR="1", COLUMNS="200")
    return env


def run_cli_bytes(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    trove = Path(sys.executable).with_name("trove")
    return subprocess.run(
        [str(trove), *args], env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=120, check=False
    )


# ── login / whoami / doctor ──────────────────────────────────────────────────


def test_login_with_api_key_saves_a_profile(server: LiveServer, tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    done = run_cli(["login", "--api-key", server.workspace_key, "--base-url", server.base_url], env)
    assert done.returncode == 0, done.stderr
    assert "saved profile 'default'" in done.stdout
    assert f"workspace={server.workspace_id}" in done.stdout
    assert "scope=workspace" in done.stdout
    config_file = tmp_path / ".trove" / "config.json"
    assert config_file.stat().st_mode & 0o777 == 0o600
    profile = json.loads(config_file.read_text())["profiles"]["default"]
    assert profile == {
        "api_key": server.workspace_key,
        "workspace_id": server.workspace_id,
        "base_url": server.base_url,
    }

    whoami = run_cli(["whoami"], env)
    assert whoami.returncode == 0, whoami.stderr
    assert "profile         : default" in whoami.stdout
    assert f"workspace       : {server.workspace_id}" in whoami.stdout
    assert "scope           : workspace" in whoami.stdout
    assert "key name        : workspace" in whoami.stdout


def test_login_from_stdin_saves_the_namespace(server: LiveServer, tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    done = run_cli(
        ["login", "--base-url", server.base_url, "--namespace", "n1"], env, input=server.workspace_key + "\n"
    )
    assert done.returncode == 0, done.stderr
    assert "namespace=n1" in done.stdout
    profile = json.loads((tmp_path / ".trove" / "config.json").read_text())["profiles"]["default"]
    assert (profile["workspace_id"], profile["namespace"]) == (server.workspace_id, "n1")
    # Runtime commands now use the saved profile and namespace.
    run = run_cli(["run", "echo", "from-profile"], env)
    assert (run.returncode, run.stdout) == (0, "from-profile\n")
    with client(server, "n1") as sdk:
        assert sdk.exec("echo n1") == "n1\n"


def test_login_with_a_locked_key_discovers_the_namespace(
    server: LiveServer, tmp_path: Path, mint_key: Callable[..., KeyCreated], namespace: str
) -> None:
    locked = mint_key("cli-locked", namespace=namespace)
    env = bare_env(tmp_path)
    done = run_cli(
        ["login", "--api-key", locked.api_key, "--base-url", server.base_url, "--save-as", "agent"], env
    )
    assert done.returncode == 0, done.stderr
    assert f"namespace={namespace}" in done.stdout
    whoami = run_cli(["--profile", "agent", "whoami"], env)
    assert f"namespace lock  : {namespace}" in whoami.stdout
    write = run_cli(["--profile", "agent", "write", "workspace/x.txt", "locked"], env)
    assert write.returncode == 0, write.stderr
    with client(server, namespace) as sdk:
        assert sdk.read_text("workspace/x.txt") == "locked"


def test_login_rejects_a_bad_key_and_a_wrong_workspace(server: LiveServer, tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    bad = run_cli(
        ["login", "--api-key", "trove-sk-" + secrets.token_urlsafe(32), "--base-url", server.base_url], env
    )
    assert bad.returncode != 0
    assert "auth failed (401)" in bad.stderr
    wrong = run_cli(
        [
            "login",
            "--api-key",
            server.workspace_key,
            "--base-url",
            server.base_url,
            "--workspace",
            "ws-other",
        ],
        env,
    )
    assert wrong.returncode != 0
    assert "doesn't match" in wrong.stderr
    assert not (tmp_path / ".trove" / "config.json").exists()


def test_whoami_shows_admin_scope(server: LiveServer, cli: Cli) -> None:
    done = cli("whoami", api_key=server.admin_key)
    assert done.returncode == 0, done.stderr
    assert "scope           : admin" in done.stdout
    assert "profile         : env" in done.stdout


def test_doctor_pings_v1_me(server: LiveServer, cli: Cli) -> None:
    done = cli("doctor")
    assert done.returncode == 0, done.stderr
    assert "/v1/me OK — scope=workspace" in done.stdout
    bad = cli("doctor", api_key="trove-sk-" + secrets.token_urlsafe(32))
    assert "auth rejected (401)" in bad.stdout


# ── run ──────────────────────────────────────────────────────────────────────


def test_run_prints_output_and_propagates_exit_codes(cli: Cli) -> None:
    assert cli("write", "workspace/n.txt", "hello").returncode == 0
    listing = cli("run", "ls", "-la", "workspace/")
    assert listing.returncode == 0, listing.stderr
    assert "n.txt" in listing.stdout
    failed = cli("run", "echo out; echo err >&2; exit 7")
    assert failed.returncode == 7
    assert failed.stdout == "out\n"
    assert failed.stderr == "err\n"


def test_run_json_has_exactly_four_keys(cli: Cli) -> None:
    done = cli("run", "--json", "echo hi; exit 3")
    assert done.returncode == 3
    body = json.loads(done.stdout)
    assert set(body) == {"exit_code", "stdout", "stderr", "duration_ms"}
    assert (body["exit_code"], body["stdout"]) == (3, "hi\n")


def test_run_forwards_piped_stdin(cli: Cli) -> None:
    done = cli("run", "wc", "-c", input="hello")
    assert (done.returncode, done.stdout.strip()) == (0, "5")
    ignored = cli("run", "--no-stdin", "wc", "-c", input="hello")
    assert ignored.stdout.strip() == "0"


def test_run_timeout_is_an_http_408_error(timeout_server: LiveServer, tmp_path: Path, namespace: str) -> None:
    env = cli_env(timeout_server, tmp_path, namespace=namespace)
    done = run_cli(["run", "sleep 30"], env)
    assert done.returncode == 1
    assert "error: HTTP 408" in done.stderr


# ── file verbs ───────────────────────────────────────────────────────────────


def test_ls_plain_long_json_and_empty(cli: Cli) -> None:
    assert cli("ls").stdout == "(empty)\n"
    cli("write", "workspace/sub/a.txt", "12345")
    cli("write", "workspace/b.txt", "xy")
    assert cli("ls").stdout == "sub/\nb.txt\n"
    assert cli("ls", "workspace/sub").stdout == "a.txt\n"
    assert cli("ls", "sub").stdout == "a.txt\n"
    assert cli("ls", "workspace").stdout == "sub/\nb.txt\n"
    long_lines = cli("ls", "-l").stdout.splitlines()
    assert long_lines[0].split()[0] == "-"
    assert long_lines[0].endswith("sub/")
    assert long_lines[1].split()[0] == "2B"
    body = json.loads(cli("ls", "--json").stdout)
    assert [e["path"] for e in body["entries"]] == ["workspace/sub", "workspace/b.txt"]


def test_cat_text_binary_and_missing(cli: Cli, server: LiveServer, namespace: str) -> None:
    cli("write", "workspace/n.txt", "line one\nline two\n")
    done = cli("cat", "workspace/n.txt")
    assert (done.returncode, done.stdout) == (0, "line one\nline two\n")
    assert cli("cat", "n.txt").stdout == "line one\nline two\n"
    with client(server, namespace) as sdk:
        sdk.upload("workspace/bin.dat", bytes(range(256)))
    refused = cli("cat", "bin.dat")
    assert refused.returncode == 1
    assert "workspace/bin.dat is binary" in refused.stderr
    missing = cli("cat", "workspace/missing.txt")
    assert missing.returncode == 1
    assert "HTTP 404" in missing.stderr


def test_cat_warns_when_truncated(cli: Cli, server: LiveServer, namespace: str) -> None:
    with client(server, namespace) as sdk:
        sdk.write("workspace/big.txt", "y" * (1024 * 1024 + 10))
    done = cli("cat", "workspace/big.txt")
    assert done.returncode == 0
    assert len(done.stdout) == 1024 * 1024
    assert "truncated at 1MB" in done.stderr


def test_write_from_argument_and_stdin(cli: Cli, server: LiveServer, namespace: str) -> None:
    done = cli("write", "workspace/notes.txt", "hello world")
    assert done.returncode == 0, done.stderr
    assert "wrote workspace/notes.txt" in done.stdout
    piped = cli("write", "piped.txt", "--stdin", input="from a pipe\n")
    assert "wrote workspace/piped.txt" in piped.stdout
    with client(server, namespace) as sdk:
        assert sdk.read_text("workspace/notes.txt") == "hello world"
        assert sdk.read_text("workspace/piped.txt") == "from a pipe\n"


def test_put_and_get_round_trip_binary(cli: Cli, server: LiveServer, namespace: str, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4
    local = tmp_path / "report.pdf"
    local.write_bytes(payload)
    assert "uploaded workspace/report.pdf" in cli("put", str(local)).stdout
    assert "uploaded workspace/docs/report.pdf" in cli("put", str(local), "workspace/docs/").stdout
    assert "uploaded workspace/r2.pdf" in cli("put", str(local), "workspace/r2.pdf").stdout
    with client(server, namespace) as sdk:
        for path in ("workspace/report.pdf", "workspace/docs/report.pdf", "workspace/r2.pdf"):
            assert sdk.read_bytes(path) == payload

    env = cli_env(server, tmp_path, namespace=namespace)
    raw = run_cli_bytes(["get", "workspace/docs/report.pdf", "--stdout"], env)
    assert raw.returncode == 0
    assert raw.stdout == payload
    target = tmp_path / "out" / "copy.pdf"
    fetched = cli("get", "r2.pdf", str(target))
    assert fetched.returncode == 0, fetched.stderr
    assert target.read_bytes() == payload
    missing = cli("get", "workspace/nope.pdf", str(tmp_path / "nope.pdf"))
    assert missing.returncode == 1
    assert "not found: workspace/nope.pdf" in missing.stderr


def test_get_warns_when_the_download_is_truncated(
    capped_server: LiveServer, namespace: str, tmp_path: Path
) -> None:
    with client(capped_server, namespace) as sdk:
        sdk.upload("workspace/big.bin", b"z" * 1500)
    env = cli_env(capped_server, tmp_path, namespace=namespace)
    done = run_cli(["get", "workspace/big.bin", str(tmp_path / "big.bin")], env)
    assert done.returncode == 0, done.stderr
    assert "warning: response truncated of 1.5KB" in done.stderr
    assert (tmp_path / "big.bin").read_bytes() == b"z" * 1000


def test_write_is_logged_as_a_file_written_event(cli: Cli, server: LiveServer, namespace: str) -> None:
    with client(server, namespace) as sdk:
        sdk.write("workspace/a/b.txt", "hé")
    done = cli("events", "list", "--namespace", namespace, "--types", "file.written", "--json")
    assert done.returncode == 0, done.stderr
    [event] = [json.loads(line) for line in done.stdout.splitlines()]
    assert event["type"] == "file.written"
    assert event["namespace"] == namespace
    assert event["data"] == {"path": "workspace/a/b.txt", "size_bytes": 3}


def test_rm_deletes_and_reports_missing_without_failing(cli: Cli, server: LiveServer, namespace: str) -> None:
    cli("write", "workspace/d/a.txt", "a")
    cli("write", "workspace/b.txt", "b")
    done = cli("rm", "-y", "workspace/d", "b.txt", "workspace/missing.txt")
    assert done.returncode == 0, done.stderr
    assert "deleted workspace/d" in done.stdout
    assert "deleted workspace/b.txt" in done.stdout
    assert "not found: workspace/missing.txt" in done.stderr
    with client(server, namespace) as sdk:
        assert list(sdk.list_dir()) == []


def test_rm_of_the_root_is_refused(cli: Cli) -> None:
    cli("write", "workspace/keep.txt", "k")
    done = cli("rm", "workspace")
    assert done.returncode == 1
    assert "HTTP 400" in done.stderr
    assert cli("ls").stdout == "keep.txt\n"


def test_runtime_commands_with_an_admin_key_exit_2(cli: Cli, server: LiveServer) -> None:
    done = cli("run", "true", api_key=server.admin_key)
    assert done.returncode == 2
    assert "HTTP 403" in done.stderr


# ── keys ─────────────────────────────────────────────────────────────────────


def test_keys_list_create_revoke_with_an_admin_key(cli: Cli, server: LiveServer) -> None:
    admin = server.admin_key
    listed = cli("keys", "list", api_key=admin)
    assert listed.returncode == 0, listed.stderr
    assert "KEY ID" in listed.stdout
    scoped = json.loads(cli("keys", "create", "zed", "--namespace", "z", "--json", api_key=admin).stdout)
    assert (scoped["scope"], scoped["namespace"]) == ("workspace", "z")
    assert scoped["api_key"].startswith("trove-sk-")
    admin_key = json.loads(cli("keys", "create", "ops", "--admin", "--json", api_key=admin).stdout)
    assert admin_key["scope"] == "admin"
    assert admin_key["api_key"].startswith("trove-sk-admin-")
    pretty = cli("keys", "create", "shown-once", api_key=admin)
    assert "api_key   : trove-sk-" in pretty.stdout
    body = json.loads(cli("keys", "list", "--json", api_key=admin).stdout)
    ids = {k["key_id"] for k in body["keys"]}
    assert {scoped["key_id"], admin_key["key_id"]} <= ids
    assert all("api_key" not in k for k in body["keys"])

    for key_id in (scoped["key_id"], admin_key["key_id"]):
        revoked = cli("keys", "revoke", "-y", key_id, api_key=admin)
        assert (revoked.returncode, revoked.stdout.strip()) == (0, f"revoked {key_id}")
    again = cli("keys", "revoke", "-y", scoped["key_id"], api_key=admin)
    assert again.returncode == 1
    assert f"key not found: {scoped['key_id']}" in again.stderr
    assert cli("whoami", api_key=scoped["api_key"]).stderr != ""
    assert cli("run", "true", api_key=scoped["api_key"]).returncode == 2


def test_keys_admin_only_operations_with_a_workspace_key_exit_2(cli: Cli) -> None:
    create = cli("keys", "create", "nope")
    assert create.returncode == 2
    assert "HTTP 403" in create.stderr
    revoke = cli("keys", "revoke", "-y", "key-whatever")
    assert revoke.returncode == 2
    # Listing is allowed for unlocked workspace keys (WIRE.md A13).
    assert cli("keys", "list").returncode == 0


def test_keys_list_with_a_locked_key_exits_2(
    cli: Cli, mint_key: Callable[..., KeyCreated], namespace: str
) -> None:
    locked = mint_key("cli-locked-list", namespace=namespace)
    assert cli("keys", "list", api_key=locked.api_key).returncode == 2
