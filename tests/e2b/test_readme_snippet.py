"""The README's E2B snippet runs as printed (only the server address is this test's)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.server import LiveServer

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_snippet_runs(e2b_env: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    section = README.read_text().split("## Using the E2B SDK", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    code = code.replace("http://127.0.0.1:8080", e2b_env.base_url)
    exec(compile(code, "README.md", "exec"), {})
    assert "written through e2b" in capsys.readouterr().out
