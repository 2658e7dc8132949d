"""Keep freed memory in the process: a server that moves megabyte frames should not fault each one in.

glibc serves blocks above its mmap threshold with fresh mappings and hands free memory above
its trim threshold back to the kernel, so a stream of ~1 MB buffers (upload frames, the
websocket's masked copies, TLS output) is paged in again and again. On the Kubernetes
runtime page faults were about 40% of the API's CPU for a 100 MB upload; with these limits
the API's CPU per 100 MB uploaded fell from 0.32 s to 0.15-0.17 s (its /proc CPU time over 100 MB
uploads on the test cluster; bench-k8s reports the figure as `api_cpu_s_per_100mb`).
Explicit ``MALLOC_*_`` environment variables win; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; True if the C library took them."""
    if any(name in os.environ for name in _ENV):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
