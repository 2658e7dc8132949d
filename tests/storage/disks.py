"""Small real filesystems for the storage tests: a loop-mounted ext4 made by the test (root only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.server import LiveServer

MIB = 1024 * 1024


def require_loop_mounts() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the test loop-mounts a small ext4 filesystem (CI runs as root)")
    missing = [tool for tool in ("mkfs.ext4", "mount", "umount") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install e2fsprogs util-linux)")


@contextmanager
def small_filesystem(size_mb: int) -> Iterator[Path]:
    """A fresh ext4 of ``size_mb`` MiB, mounted; no root-reserved blocks (-m 0), as on a tuned disk."""
    require_loop_mounts()
    work = Path(tempfile.mkdtemp(prefix="trove-small-disk-", dir="/tmp"))
    image, mountpoint = work / "disk.img", work / "mnt"
    mountpoint.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(size_mb * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True, capture_output=True)
    # Sandbox uids must traverse to the namespaces below.
    for directory in (work, mountpoint):
        directory.chmod(0o711)
    try:
        yield mountpoint
    finally:
        unmount(mountpoint)
        shutil.rmtree(work, ignore_errors=True)


def unmount(mountpoint: Path) -> None:
    if not os.path.ismount(mountpoint):
        return
    if subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False).returncode:
        # Busy: detach now, the kernel finishes once nothing uses it.
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def events(server: LiveServer, namespace: str, type_: str) -> list[dict[str, object]]:
    """The namespace's events of one type, newest first (every page)."""
    found: list[dict[str, object]] = []
    cursor: str | None = None
    headers = {"Authorization": f"Bearer {server.workspace_key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as http:
        while True:
            params = {"namespace": namespace, "limit": "200", **({"cursor": cursor} if cursor else {})}
            page = http.get(f"/v1/workspaces/{server.workspace_id}/events", params=params)
            page.raise_for_status()
            body = page.json()
            found += [e for e in body["events"] if e["type"] == type_]
            cursor = body["next_cursor"]
            if not cursor:
                return found


def put_file(server: LiveServer, namespace: str, path: str, data: bytes) -> httpx.Response:
    """PUT /files with raw httpx: the test needs the problem's code, which the SDK does not expose."""
    headers = {"Authorization": f"Bearer {server.workspace_key}", "X-Namespace": namespace}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as http:
        return http.put(f"/files/{path}", content=data)


def assert_storage_full(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "storage_full"
