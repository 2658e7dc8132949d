"""First-run keys reach the console only on a laptop; on Kubernetes only where to find them.

The process tests (tests/contract/test_server_process.py) cover JSON logs and TROVE_ADMIN_KEY;
the Kubernetes runtime cannot start without a cluster, so its case runs the announcement here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from trove_api.cli import FIRST_RUN_FILE, announce_quietly, keys_stay_off_the_console
from trove_api.services.keys import create_workspace
from trove_api.stores.db import Database
from trove_core.names import WORKSPACE_KEY_PREFIX, new_api_key
from trove_core.settings import Settings


def test_only_a_laptop_prints_keys(tmp_path: Path) -> None:
    assert keys_stay_off_the_console(Settings(data_dir=tmp_path)) is None
    assert keys_stay_off_the_console(Settings(data_dir=tmp_path, runtime="kubernetes")) is not None
    assert keys_stay_off_the_console(Settings(data_dir=tmp_path, log_format="json")) is not None
    admin = SecretStr(new_api_key(admin=True))
    assert keys_stay_off_the_console(Settings(data_dir=tmp_path, admin_key=admin)) is not None


def test_on_kubernetes_the_first_start_logs_where_the_key_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(f"sqlite:///{tmp_path / 't.db'}")
    database.migrate()
    new = create_workspace(database, "default", workspace_key=False)
    assert new.workspace_key is None
    keys_file = tmp_path / FIRST_RUN_FILE
    with caplog.at_level(logging.INFO):
        settings = Settings(data_dir=tmp_path, runtime="kubernetes")
        why = keys_stay_off_the_console(settings)
        assert why is not None
        announce_quietly(settings, new, keys_file, why)
    console = capsys.readouterr()
    said = console.out + console.err + caplog.text
    assert new.admin_key.api_key not in said
    assert WORKSPACE_KEY_PREFIX not in said
    assert str(keys_file.resolve()) in said
    assert "kubectl exec" in said
    assert new.admin_key.api_key in keys_file.read_text()
    assert keys_file.stat().st_mode & 0o777 == 0o600
    database.dispose()
