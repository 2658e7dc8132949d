"""The namespace's agent killed (-9, from the host) in the middle of an upload: the call answers
503 with Retry-After, nothing half-written is visible, and the next call works in a new sandbox."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.hostile.helpers import KIB, agent_pid, ns_dir, raw_client
from tests.support.server import LiveServer


# A new file must not appear; one that existed must stay whole. Since the slow body goes through
# the descriptor the agent hands over (channel/fds.py), this is also that path's kill -9 test.
@pytest.mark.parametrize("existing", [None, b"old"], ids=["new-file", "replacing"])
def test_agent_killed_mid_upload(
    api: httpx.Client, hostile: LiveServer, namespace: str, existing: bytes | None
) -> None:
    assert api.post("/write", json={"path": "keep.txt", "content": "kept"}).status_code == 200
    if existing is not None:
        assert api.put("/files/half.bin", content=existing).status_code == 200
    workspace = ns_dir(hostile, namespace)
    first_sent, go_on = threading.Event(), threading.Event()

    def body() -> Iterator[bytes]:
        yield b"a" * (64 * KIB)
        first_sent.set()
        go_on.wait(30)
        yield b"b" * (64 * KIB)

    answers: list[httpx.Response] = []

    def upload() -> None:
        with raw_client(hostile, namespace) as http:
            answers.append(http.put("/files/half.bin", content=body()))

    uploader = threading.Thread(target=upload)
    uploader.start()
    assert first_sent.wait(30)
    deadline = time.monotonic() + 30
    while not list(workspace.glob(".trove-upload-*")):  # the agent has opened the upload
        assert time.monotonic() < deadline, "the upload never reached the agent"
        time.sleep(0.01)
    os.kill(agent_pid(hostile, namespace), signal.SIGKILL)
    go_on.set()
    uploader.join(60)

    (answer,) = answers
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == "sandbox_channel_lost"
    assert int(answer.headers["retry-after"]) >= 1

    # Nothing half-written is visible; the next calls work (a new sandbox).
    listing = api.get("/v1/files", params={"recursive": "true"})
    assert listing.status_code == 200, listing.text
    if existing is None:
        assert not (workspace / "half.bin").exists()
        assert "half.bin" not in listing.text
    else:
        assert (workspace / "half.bin").read_bytes() == existing
        assert api.get("/files/half.bin").content == existing
    assert ".trove-upload-" not in listing.text
    assert api.get("/files/keep.txt").content == b"kept"
    assert api.post("/write", json={"path": "after.txt", "content": "ok"}).status_code == 200
    assert api.post("/v1/exec", json={"command": "cat workspace/after.txt"}).json()["stdout"] == "ok"
    # The new agent drops the dead one's temp file (no live upload holds its lock).
    deadline = time.monotonic() + 30
    while list(workspace.glob(".trove-upload-*")):
        assert time.monotonic() < deadline, "the cut-off upload was never swept"
        time.sleep(0.05)
