"""The API keeps freed megabyte blocks instead of faulting every transfer frame in anew."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's allocator only")

# Megabyte buffers allocated and dropped in bursts, as upload frames and TLS output are.
CHURN = textwrap.dedent(
    """
    import resource, sys
    from trove_api.allocator import keep_freed_memory
    took = keep_freed_memory() if sys.argv[1] == "tuned" else None
    warm = [bytearray(1 << 20)]
    del warm  # glibc has adapted its own thresholds to this size
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        held = [bytearray(1 << 20) for _ in range(4)]
        del held
    print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def churn(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode], env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


def test_tuning_takes_and_stops_the_page_faults() -> None:
    _, plain = churn("plain")
    took, tuned = churn("tuned")
    assert took == "True"
    assert plain > 10_000  # 200 MB through the default allocator is paged in again
    assert tuned < plain // 10


def test_explicit_malloc_settings_win() -> None:
    took, _ = churn("tuned", MALLOC_TRIM_THRESHOLD_="131072")
    assert took == "False"
