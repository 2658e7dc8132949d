"""Volumes without root: a quota asked for is warned about, never half-applied.

The machines running the suite are root, so the non-root case fakes ``geteuid`` (the only
thing that differs); everything else is the real module on a real directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trove_api.runtimes.local import volumes
from trove_api.runtimes.local.volumes import Volumes


def test_without_root_a_quota_is_a_warning_and_namespaces_stay_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(volumes.os, "geteuid", lambda: 1000)
    made = Volumes(tmp_path, 8 * 1024 * 1024)
    assert not made.creates_images
    [warning] = made.check()
    assert "NO disk quota" in warning
    assert made.ensure("ws-1", "ns", None, create=made.creates_images) is None
    assert not (tmp_path / "images").exists()
    assert not (tmp_path / "mounts").exists()
    made.release()


def test_quota_off_touches_nothing(tmp_path: Path) -> None:
    made = Volumes(tmp_path, 0)
    assert made.check() == []
    assert made.ensure("ws-1", "ns", None, create=made.creates_images) is None
    assert list(tmp_path.iterdir()) == []
    made.release()
