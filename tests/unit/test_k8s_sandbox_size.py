"""What E2B's list and get_info report for a sandbox pod: the limits the API gives each pod."""

from __future__ import annotations

from pathlib import Path

import pytest

from trove_api.runtimes.kubernetes.runtime import pod_size
from trove_core.runtime import SandboxSize
from trove_core.settings import Settings


@pytest.mark.parametrize(
    ("cpu", "memory", "size"),
    [
        ("1", "1Gi", SandboxSize(cpu_count=1, memory_mb=1024)),
        ("500m", "512Mi", SandboxSize(cpu_count=1, memory_mb=512)),  # a quota rounded up, as the agent counts
        ("2500m", "2G", SandboxSize(cpu_count=3, memory_mb=1907)),
        ("no", "limit", SandboxSize(cpu_count=1, memory_mb=0)),  # not a quantity: memory not reported
    ],
)
def test_pod_size_is_the_pod_limits(cpu: str, memory: str, size: SandboxSize, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, k8s_cpu_limit=cpu, k8s_memory_limit=memory)
    assert pod_size(settings) == size
