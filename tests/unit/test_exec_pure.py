"""trove_api.services.exec, pure parts: the init prelude, path rewriting, truncation, legacy text."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trove_api.services.exec import (
    INIT_PRELUDE,
    ExecResult,
    build_script,
    legacy_text,
    rewrite_paths,
    truncation_note,
)

HOST = "/var/lib/trove/sandboxes/abc/namespaces/ws-1/agent"


def test_build_script_sources_init_on_its_own_line() -> None:
    script = build_script("echo hi")
    assert script.startswith(INIT_PRELUDE)
    assert INIT_PRELUDE.endswith("\n")
    assert script.endswith("echo hi")
    assert "workspace/.trove/init.sh" in INIT_PRELUDE


def test_init_runs_even_when_the_command_does_not_parse(tmp_path: Path) -> None:
    (tmp_path / "workspace" / ".trove").mkdir(parents=True)
    (tmp_path / "workspace" / ".trove" / "init.sh").write_text("echo from-init; false_cmd_xyz\n")
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", build_script("echo (")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout == "from-init\n"
    assert "false_cmd_xyz" in result.stderr  # init's error only reaches stderr
    assert result.returncode != 0


def test_init_state_carries_into_the_command(tmp_path: Path) -> None:
    (tmp_path / "workspace" / ".trove").mkdir(parents=True)
    (tmp_path / "workspace" / "data").mkdir()
    (tmp_path / "workspace" / ".trove" / "init.sh").write_text("cd workspace/data; export GREETING=hi\n")
    result = subprocess.run(
        ["bash", "-c", build_script('echo "$GREETING $(basename "$PWD")"')],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "hi data\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{HOST}/a.txt", "workspace/a.txt"),
        (f"ls {HOST}", "ls workspace"),
        (f"{HOST}\n", "workspace\n"),
        (f"'{HOST}'", "'workspace'"),
        (f"{HOST}: x {HOST}/b", "workspace: x workspace/b"),
        (f"{HOST}-other/x", f"{HOST}-other/x"),  # a sibling namespace is not this one
        (f"{HOST}2/x", f"{HOST}2/x"),
        (f"{HOST}.bak", f"{HOST}.bak"),
        ("/workspace/a", "/workspace/a"),
    ],
)
def test_rewrite_paths(text: str, expected: str) -> None:
    assert rewrite_paths(text, [HOST]) == expected


def test_rewrite_paths_prefers_the_longest_alias() -> None:
    view = "/data/ns/ws-1/.view-agent/workspace"
    text = f"{view}/a and {HOST}/b"
    assert rewrite_paths(text, [HOST, view, "", HOST + "/"]) == "workspace/a and workspace/b"


def test_rewrite_paths_escapes_regex_characters() -> None:
    alias = "/data/a+b(c)/ns"
    assert rewrite_paths(f"{alias}/x /data/aab(c)/ns", [alias]) == "workspace/x /data/aab(c)/ns"


@given(st.text(max_size=200))
def test_rewritten_output_never_contains_the_alias(noise: str) -> None:
    text = f"{noise}{HOST}/{noise}{HOST}"
    assert f"{HOST}/" not in rewrite_paths(text, [HOST]).replace(f"{HOST}-", "")


def test_truncation_note() -> None:
    assert truncation_note(1024 * 1024) == "[output truncated at 1 MiB]"
    assert truncation_note(2 * 1024 * 1024) == "[output truncated at 2 MiB]"
    assert truncation_note(65536) == "[output truncated at 65536 bytes]"


def test_legacy_text() -> None:
    ok = ExecResult(exit_code=0, stdout="out\n", stderr="err\n", duration_ms=1, truncated=False)
    assert legacy_text(ok) == "out\n"
    failed = ExecResult(exit_code=3, stdout="out\n", stderr="err\n", duration_ms=1, truncated=False)
    assert legacy_text(failed) == "[exit 3]\nout\nerr\n"
    silent = ExecResult(exit_code=1, stdout="", stderr="", duration_ms=1, truncated=False)
    assert legacy_text(silent) == "[exit 1]\n"
