"""Files without trove-agent: a sandbox image with neither the agent nor python3, through the SDK.

The runtime finds the agent missing when its warm channel fails to start and then serves every
file operation through fresh pod execs of POSIX tools (``runtimes/kubernetes/fallback.py``).
The image is ``$TROVE_K8S_NOAGENT_IMAGE`` (``make images`` builds it), else built here once
from ``images/sandbox-noagent`` with ``image.sh`` (``$TROVE_K8S_SCRIPTS``, ../shared/k8s).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from trove_sdk import TroveClient, TroveError, TroveNotFoundError

from tests.support.cluster import ROOT, SANDBOX_IMAGE, backend, skip_or_fail, wait_for
from tests.support.server import LiveServer, start_server
from trove_core.wire import MIB

NOAGENT_DOCKERFILE = ROOT / "images" / "sandbox-noagent" / "Dockerfile"
UPLOAD_CAP = 30 * MIB


@pytest.fixture(scope="session")
def noagent_image() -> str:
    # Checked first: outside `make e2e` there may be no cluster to build the image into.
    if backend() != "kubernetes":
        pytest.skip("e2e tests run under `make e2e` (TROVE_TEST_BACKEND=kubernetes)")
    given = os.environ.get("TROVE_K8S_NOAGENT_IMAGE")
    if given:
        return given
    scripts = Path(os.environ.get("TROVE_K8S_SCRIPTS") or ROOT.parent / "shared" / "k8s")
    script = scripts / "image.sh"
    if not os.access(script, os.X_OK) or os.geteuid() != 0:
        skip_or_fail(
            "no sandbox image without the agent: set TROVE_K8S_NOAGENT_IMAGE (`make images` builds "
            f"trove-sandbox-noagent), or run as root with {script} (TROVE_K8S_SCRIPTS) to build one"
        )
    tag = "trove-sandbox-noagent:test"
    with tempfile.TemporaryDirectory() as context:
        text = re.sub(
            r"^ARG BASE=.*$", f"ARG BASE={SANDBOX_IMAGE}", NOAGENT_DOCKERFILE.read_text(), flags=re.M
        )
        (Path(context) / "Dockerfile").write_text(text)
        built = subprocess.run(
            [str(script), "build", tag, context], capture_output=True, text=True, timeout=900, check=False
        )
    if built.returncode != 0:
        pytest.fail(f"building {tag} with {script} failed:\n{built.stderr[-3000:]}", pytrace=False)
    return tag


@pytest.fixture(scope="module")
def bare(noagent_image: str) -> Iterator[LiveServer]:
    if backend() != "kubernetes":
        pytest.skip("e2e tests run under `make e2e` (TROVE_TEST_BACKEND=kubernetes)")
    # A busy shared test node can need more than the default 20 s to start a pod (below 30 s).
    overrides = {
        "k8s_sandbox_image": noagent_image,
        "upload_max_bytes": UPLOAD_CAP,
        "k8s_ready_timeout_s": 29,
    }
    with start_server(**overrides) as live:
        yield live


@pytest.fixture
def trove(bare: LiveServer, namespace: str) -> Iterator[TroveClient]:
    with TroveClient(
        api_key=bare.workspace_key, namespace=namespace, base_url=bare.base_url, timeout=120
    ) as sdk:
        yield sdk


def raw(bare: LiveServer, namespace: str) -> httpx.Client:
    """Plain HTTP, for what the SDK does not expose (ranges, chunked bodies)."""
    headers = {"Authorization": f"Bearer {bare.workspace_key}", "X-Namespace": namespace}
    return httpx.Client(base_url=bare.base_url, headers=headers, timeout=120)


def test_no_agent_no_python_and_exec_still_works(trove: TroveClient) -> None:
    out = trove.exec(
        "command -v python3 || echo no-python; test -e /usr/local/lib/trove/agent.py || echo no-agent"
    )
    assert out.split() == ["no-python", "no-agent"]
    trove.write("workspace/hello.txt", "hi")
    hello, uid = trove.exec("cat workspace/hello.txt; echo; id -u").split()
    assert hello == "hi"
    assert int(uid) >= 1_000_000_000  # the pod's own uid (RLIMIT_NPROC counts per uid)


def test_write_upload_and_read_round_trip(bare: LiveServer, namespace: str, trove: TroveClient) -> None:
    text = "héllo wörld\n" * 1000
    assert trove.write("workspace/notes/a.txt", text).size_bytes == len(text.encode())
    assert trove.read_text("workspace/notes/a.txt") == text
    binary = bytes(range(256)) * 4 + b"\x00\n\r\xff"
    assert trove.upload("workspace/bin/all.bin", binary).size_bytes == len(binary)
    assert trove.read_bytes("workspace/bin/all.bin") == binary
    assert trove.read_file("workspace/bin/all.bin").encoding == "binary"
    big = secrets.token_bytes(20 * MIB + 3)
    assert trove.upload("workspace/big.bin", big).size_bytes == len(big)
    assert trove.read_bytes("workspace/big.bin") == big
    assert trove.exec("sha256sum < workspace/big.bin").split()[0] == hashlib.sha256(big).hexdigest()
    # Replacing is atomic and complete: the shorter content leaves nothing of the old one.
    trove.upload("workspace/big.bin", b"small")
    assert trove.read_bytes("workspace/big.bin") == b"small"
    with raw(bare, namespace) as http:
        trove.upload("workspace/range.bin", big[:1000])
        part = http.get("/files/workspace/range.bin", headers={"Range": "bytes=10-19"})
        assert (part.status_code, part.content, part.headers["content-length"]) == (206, big[10:20], "10")
        assert part.headers["content-range"] == "bytes 10-19/1000"
        head = http.head("/files/workspace/range.bin")
        assert (head.headers["content-length"], head.headers["x-trove-size"]) == ("1000", "1000")
    assert not trove.exec("find workspace -name '.trove-upload-*'")


def test_listing_order_fields_and_odd_names(trove: TroveClient) -> None:
    trove.exec(
        "cd workspace && mkdir -p d/sub 'sp dir' && printf x > 'sp ace' "
        "&& printf yy > \"$(printf 'new\\nline')\" && printf zzz > d/sub/f && printf a > B "
        "&& ln -s d dl && ln -s /etc esc && touch .hidden"
    )
    top = trove.list_dir("workspace/")
    assert [(e.name, e.is_dir) for e in top] == [
        ("d", True), ("sp dir", True),
        (".hidden", False), ("B", False), ("dl", False), ("esc", False),
        ("new\nline", False), ("sp ace", False),
    ]  # fmt: skip
    sizes = {e.name: e.size_bytes for e in top if not e.is_dir}
    assert (sizes["B"], sizes["new\nline"], sizes["sp ace"], sizes["dl"]) == (1, 2, 1, 1)
    second = trove.exec("date -u -r workspace/B +%Y-%m-%dT%H:%M:%S").strip()
    assert next(e for e in top if e.name == "B").modified_at.startswith(second)
    deep = trove.list_dir("workspace/", recursive=True)
    assert [e.path for e in deep][:4] == [
        "workspace/d",
        "workspace/d/sub",
        "workspace/d/sub/f",
        "workspace/sp dir",
    ]
    assert deep.truncated is False
    assert [e.path for e in trove.list_dir("workspace/dl")] == ["workspace/dl/sub"]


def test_listing_caps_entries_and_depth(trove: TroveClient) -> None:
    trove.exec(
        "cd workspace && mkdir -p many deep/$(seq -s / 1 24) && cd many && seq -w 1 1100 | xargs touch"
    )
    listing = trove.list_dir("workspace/", recursive=True)
    assert len(listing) == 1000
    assert listing.truncated is True
    paths = [e.path for e in listing]
    assert paths[:2] == ["workspace/deep", "workspace/deep/1"]
    # Depth 20 is listed but not entered; then "many" and as many of its files as fit.
    assert paths[19] == "workspace/deep/" + "/".join(str(i) for i in range(1, 20))
    assert paths[20:22] == ["workspace/many", "workspace/many/0001"]
    assert paths[-1] == "workspace/many/0979"
    flat = trove.list_dir("workspace/many")
    assert (len(flat), flat.truncated, flat[-1].name) == (1000, True, "1000")


def test_delete_files_trees_and_errors(trove: TroveClient) -> None:
    trove.write("workspace/t/a/b/c.txt", "c")
    trove.write("workspace/t/x.txt", "x")
    trove.exec("ln -s /etc workspace/esc && ln -s t workspace/tl")
    assert trove.delete("workspace/t/x.txt") == "workspace/t/x.txt"
    assert trove.delete("workspace/tl") == "workspace/tl"  # the link, not its target
    assert trove.exec("ls workspace/t") == "a\n"
    assert trove.delete("workspace/t") == "workspace/t"
    assert trove.exec("ls -A workspace") == "esc\n"
    with pytest.raises(TroveNotFoundError):
        trove.delete("workspace/t")
    for path in ("workspace/", "workspace/esc/passwd"):
        with pytest.raises(TroveError) as caught:
            trove.delete(path)
        assert caught.value.status_code == 400
    # The escaping link itself is deleted, as with the agent; what it points at stays.
    assert trove.delete("workspace/esc") == "workspace/esc"
    assert trove.exec("ls -A workspace; test -f /etc/passwd && echo intact") == "intact\n"


def test_traversal_and_symlink_escapes_are_refused(trove: TroveClient) -> None:
    trove.write("workspace/in.txt", "in")
    trove.exec(
        "cd workspace && ln -s /etc esc && ln -s /etc/hostname host && ln -s ../.. up && ln -s in.txt ok"
    )
    attempts = [
        lambda: trove.read_bytes("workspace/esc/passwd"),
        lambda: trove.read_text("workspace/host"),
        lambda: trove.list_dir("workspace/esc"),
        lambda: trove.list_dir("workspace/up"),
        lambda: trove.write("workspace/esc/evil", "x"),
        lambda: trove.upload("workspace/up/tmp/evil", b"x"),
        lambda: trove.read_text("workspace/../../etc/passwd"),
        lambda: trove.write("workspace/../evil", "x"),
    ]
    for attempt in attempts:
        with pytest.raises(TroveError) as caught:
            attempt()
        assert caught.value.status_code == 400, caught.value
        assert "rejected" in str(caught.value).lower(), caught.value
    assert trove.read_text("workspace/ok") == "in"
    assert trove.exec("ls /tmp/evil /etc/evil 2>&1 | grep -c 'No such'") == "2\n"


def test_broken_and_oversized_uploads_leave_nothing(
    bare: LiveServer, namespace: str, trove: TroveClient
) -> None:
    trove.write("workspace/keep.txt", "keep")

    def cut_short() -> Iterator[bytes]:
        yield b"a" * (3 * MIB)
        raise ConnectionAbortedError("the client gave up")

    def oversized() -> Iterator[bytes]:  # chunked, so only the runtime's own count can stop it
        for _ in range(UPLOAD_CAP // MIB + 1):
            yield b"b" * MIB

    with raw(bare, namespace) as http:
        with pytest.raises(ConnectionAbortedError):
            http.put("/files/workspace/cut.bin", content=cut_short())
        try:
            status = http.put("/files/workspace/over.bin", content=oversized()).status_code
        except httpx.TransportError:  # the server may answer 413 and close while the body is still sent
            status = 413
        assert status == 413
    # The abort reaches the pod after the client has gone: wait for the temp file to go.
    wait_for(lambda: trove.exec("ls -A workspace") == "keep.txt\n", timeout=30, what="no upload leftovers")
    for path in ("workspace/cut.bin", "workspace/over.bin"):
        with pytest.raises(TroveNotFoundError):
            trove.read_bytes(path)


def test_snapshot_round_trip_without_the_agent(trove: TroveClient) -> None:
    # The fallback script's export and import (GNU tar in fresh execs), with the same checks.
    blob = os.urandom(300_000)
    trove.write("workspace/keep/a.txt", "a\n")
    trove.upload("workspace/bin.bin", blob)
    trove.exec("cd workspace && ln -s keep alias && mkdir -p empty/dir && printf x > '.hidden file'")
    show = "cd workspace && find . | LC_ALL=C sort; cat keep/a.txt; sha256sum bin.bin 2>&1; true"
    before = trove.exec(show)
    snap = trove.create_snapshot(label="no-agent")
    trove.write("workspace/keep/a.txt", "changed\n")
    trove.delete("workspace/bin.bin")
    trove.write("workspace/new.txt", "not in the snapshot\n")
    trove.exec("rm -r workspace/empty workspace/alias")
    assert trove.exec(show) != before
    assert trove.restore_snapshot(snap.snapshot_id) == 3  # regular files
    assert trove.exec(show) == before
    assert (
        hashlib.sha256(trove.read_bytes("workspace/bin.bin")).hexdigest() == hashlib.sha256(blob).hexdigest()
    )
    assert trove.exec("ls -A workspace | grep -c '^[.]trove-' || true") == "0\n"  # nothing left beside
