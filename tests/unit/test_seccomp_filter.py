"""The seccomp filter compiles with the system libseccomp, and its absence stops the server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trove_api.runtimes.local.runtime import LocalRuntime
from trove_api.runtimes.local.sandbox import Limits
from trove_api.runtimes.local.seccomp_filter import compile_filter
from trove_core.errors import SandboxUnavailableError

_LIMITS = Limits(cpu_seconds=5, file_bytes=1024 * 1024, processes=64, address_space_bytes=None)


def test_filter_compiles_to_a_private_bpf_file(tmp_path: Path) -> None:
    target = tmp_path / "seccomp.bpf"
    compile_filter(target)
    data = target.read_bytes()
    assert data
    assert len(data) % 8 == 0  # whole struct sock_filter instructions
    assert target.stat().st_mode & 0o777 == 0o600


def _runtime(data_dir: Path, seccomp: bool) -> LocalRuntime:
    return LocalRuntime(
        data_dir,
        sandbox=True,
        network="off",
        uid_base=200_000,
        limits=_LIMITS,
        memory_bytes=2**28,
        seccomp=seccomp,
    )


def test_missing_libseccomp_stops_the_start_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulated fault: a host without libseccomp cannot be produced on this machine, so the
    # binding's import is made to fail (None in sys.modules raises ImportError).
    monkeypatch.setitem(sys.modules, "pyseccomp", None)
    with pytest.raises(SandboxUnavailableError, match="TROVE_SANDBOX_SECCOMP=off"):
        _runtime(tmp_path / "a", seccomp=True)
    runtime = _runtime(tmp_path / "b", seccomp=False)
    assert runtime.seccomp_path is None
    assert any("without a syscall filter" in warning for warning in runtime.startup_report())
