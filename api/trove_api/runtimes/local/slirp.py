"""Starting one ``slirp4netns`` for a network namespace and waiting until it serves."""

from __future__ import annotations

import os
import select
import subprocess
from pathlib import Path

READY_TIMEOUT_S = 5.0


def start_slirp(netns_path: str, api_socket: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The running slirp4netns and our end of its ``--exit-fd`` pipe (closing it stops slirp).

    It dies with the thread that calls this (parent-death signal), so call it from a thread
    that outlives the network. ``RuntimeError`` (slirp stopped) when it is not ready in time.
    """
    api_socket.unlink(missing_ok=True)
    ready_r, ready_w = os.pipe()
    exit_r, exit_w = os.pipe()
    try:
        slirp = subprocess.Popen(
            [
                "slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
                "--netns-type=path", f"--ready-fd={ready_w}", f"--exit-fd={exit_r}",
                f"--api-socket={api_socket}", netns_path, "tap0",
            ],
            pass_fds=(ready_w, exit_r),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    except BaseException:
        os.close(exit_w)
        raise
    finally:
        os.close(ready_w)
        os.close(exit_r)
    ready = False
    try:
        # poll, not select: a server with many sandboxes has descriptors past select's 1024.
        waiting = select.poll()
        waiting.register(ready_r, select.POLLIN)
        ready = bool(waiting.poll(READY_TIMEOUT_S * 1000)) and os.read(ready_r, 1) == b"1"
    finally:
        os.close(ready_r)
        if not ready:  # also on any exception: never a slirp left running that no one holds
            os.close(exit_w)
            slirp.kill()
            slirp.wait()
    if not ready:
        raise RuntimeError(f"slirp4netns was not ready within {READY_TIMEOUT_S:.0f} s")
    return slirp, exit_w
