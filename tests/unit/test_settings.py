"""trove_core.settings: flat TROVE_* environment variables (the only unit test reading the env)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from trove_core.settings import CLIENT_ENV_NAMES, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TROVE_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.host == "127.0.0.1"
    assert settings.exec_timeout_s == 30
    assert settings.exec_output_bytes == 1024 * 1024
    assert settings.exec_memory_mb == 1024
    assert settings.exec_pids == 256
    assert settings.exec_file_mb == 100
    assert settings.sandbox == "bwrap"
    assert settings.sandbox_network == "outbound"
    assert settings.sandbox_seccomp == "on"
    assert settings.write_max_bytes == 10 * 1024 * 1024
    assert settings.upload_max_bytes == 100 * 1024 * 1024


def test_reads_trove_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TROVE_EXEC_TIMEOUT_S", "2.5")
    monkeypatch.setenv("TROVE_EXEC_OUTPUT_BYTES", "65536")
    monkeypatch.setenv("TROVE_EXEC_PIDS", "64")
    monkeypatch.setenv("TROVE_SANDBOX_NETWORK", "off")
    monkeypatch.setenv("TROVE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TROVE_PORT", "9999")
    monkeypatch.setenv("TROVE_ADMIN_KEY", "trove-sk-admin-secret")
    settings = load_settings()
    assert settings.exec_timeout_s == 2.5
    assert settings.exec_output_bytes == 65536
    assert settings.exec_pids == 64
    assert settings.sandbox_network == "off"
    assert settings.data_dir == tmp_path
    assert settings.port == 9999
    assert settings.admin_key is not None
    assert settings.admin_key.get_secret_value() == "trove-sk-admin-secret"
    assert "trove-sk-admin-secret" not in repr(settings)
    assert settings.effective_database_url == f"sqlite:///{tmp_path.resolve() / 'trove.db'}"


def test_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROVE_EXEC_PIDS", "64")
    assert load_settings(exec_pids=32).exec_pids == 32


def test_database_url_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROVE_DATABASE_URL", "postgresql://u@h/db")
    assert load_settings().effective_database_url == "postgresql://u@h/db"


def test_client_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # A shell holding the official client's variables must not change (or break) the server.
    for name in CLIENT_ENV_NAMES:
        monkeypatch.setenv(f"TROVE_{name.upper()}", "client-value")
    settings = load_settings()
    assert settings == Settings()
    assert not CLIENT_ENV_NAMES & set(Settings.model_fields)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TROVE_SANDBOX", "docker"),
        ("TROVE_SANDBOX_NETWORK", "maybe"),
        ("TROVE_RUNTIME", "vm"),
        ("TROVE_EXEC_TIMEOUT_S", "0"),
        ("TROVE_EXEC_TIMEOUT_S", "soon"),
        ("TROVE_EXEC_OUTPUT_BYTES", "10"),
        ("TROVE_PORT", "70000"),
        ("TROVE_LOG_LEVEL", "loud"),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        load_settings()


def test_write_cap_must_fit_in_json_body_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROVE_JSON_BODY_MAX_BYTES", "4096")
    monkeypatch.setenv("TROVE_WRITE_MAX_BYTES", "8192")
    with pytest.raises(ValidationError, match="write_max_bytes"):
        load_settings()


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.exec_pids = 1  # type: ignore[misc]


@pytest.mark.parametrize("value", ["10.0.2.2/32", "127.0.0.1/32", "0.0.0.0/0", "fd00::/8", "nonsense"])
def test_network_allow_refuses_loopback_slirp_ipv6_and_garbage(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TROVE_SANDBOX_NETWORK_ALLOW", value)
    with pytest.raises(ValidationError):
        load_settings()


def test_network_allow_takes_private_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROVE_SANDBOX_NETWORK_ALLOW", "10.0.0.0/8, 169.254.169.254/32")
    assert load_settings().sandbox_network_allow == "10.0.0.0/8, 169.254.169.254/32"
