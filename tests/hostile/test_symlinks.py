"""Symlinks made inside the sandbox never lead the server outside the namespace.

The agent controls every name in its namespace, including symlinks it makes with ``ln -s``.
The sandbox resolves them against its own view, but the server (root on the host) would
resolve them against the host: ``ln -s ../other`` inside the sandbox names nothing there, yet
on the host it is the sibling namespace's directory. Every file endpoint must refuse them.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.hostile.helpers import assert_problem, in_spares_folder, ns_dir, raw_client
from tests.support.server import LiveServer


@dataclass
class Trap:
    http: httpx.Client
    namespace: str
    victim: Path  # a host directory outside every namespace
    other: str  # a sibling namespace holding a secret
    secret: str


@pytest.fixture
def trap(hostile: LiveServer, namespace: str) -> Iterator[Trap]:
    tok = secrets.token_hex(4)
    victim = Path(f"/tmp/trove-victim-{tok}")
    victim.mkdir(mode=0o755)
    (victim / "keep.txt").write_text("host file")
    other = namespace + "-other"
    secret = "secret-" + secrets.token_hex(8)
    with raw_client(hostile, other) as http_other:
        assert (
            http_other.post("/write", json={"path": "data/secret.txt", "content": secret}).status_code == 200
        )
    other_host = ns_dir(hostile, other)
    http = raw_client(hostile, namespace)
    made = http.post(
        "/v1/exec",
        json={
            "command": (
                "mkdir -p workspace/data && echo inside > workspace/data/in.txt && "
                "ln -s /etc workspace/etc && "
                "ln -s ../../.. workspace/up && "
                "ln -s /etc/passwd workspace/pw && "
                f"ln -s {victim} workspace/victim && "
                f"ln -s {victim}/keep.txt workspace/keeplink && "
                f"ln -s ../{other} workspace/sib && "
                f"ln -s {other_host} workspace/sibabs && "
                f"ln -s ../{other}/data/secret.txt workspace/sibfile && "
                "ln -s data workspace/alias && "
                "ln -s loop2 workspace/loop1 && ln -s loop1 workspace/loop2"
            )
        },
    )
    assert made.status_code == 200, made.text
    assert made.json()["exit_code"] == 0, made.text
    # The traps are live: resolved on the host, they lead out of the namespace.
    mine = ns_dir(hostile, namespace)
    assert (mine / "sib").resolve() == other_host.resolve()
    assert (mine / "victim" / "keep.txt").resolve() == (victim / "keep.txt").resolve()
    assert (mine / "up").resolve() == mine.parent.parent.parent.resolve()
    try:
        yield Trap(http=http, namespace=namespace, victim=victim, other=other, secret=secret)
    finally:
        http.close()
        shutil.rmtree(victim, ignore_errors=True)


ESCAPING_FILES = [
    "etc/passwd",
    "etc/hostname",
    "pw",
    "up/trove.db",
    "victim/keep.txt",
    "keeplink",
    "sib/data/secret.txt",
    "sibabs/data/secret.txt",
    "sibfile",
    "workspace/sib/data/secret.txt",
]
ESCAPING_DIRS = ["etc", "up", "victim", "sib", "sibabs", "sib/data", "workspace/etc", "etc/ssl"]


@pytest.mark.parametrize("path", ESCAPING_FILES)
def test_reads_through_escaping_symlinks_are_rejected(trap: Trap, path: str) -> None:
    content = trap.http.get("/v1/files/content", params={"path": path})
    assert_problem(content, 400, "path_rejected")
    raw = trap.http.get(f"/files/{path}")
    assert_problem(raw, 400, "path_rejected")
    assert trap.secret not in raw.text
    assert "root:" not in raw.text


@pytest.mark.parametrize("path", ESCAPING_DIRS)
def test_lists_through_escaping_symlinks_are_rejected(trap: Trap, path: str) -> None:
    for recursive in ("false", "true"):
        assert_problem(
            trap.http.get("/v1/files", params={"path": path, "recursive": recursive}), 400, "path_rejected"
        )


def test_recursive_listing_of_the_root_does_not_follow_symlinks(trap: Trap) -> None:
    listing = trap.http.get("/v1/files", params={"path": "workspace/", "recursive": "true"})
    assert listing.status_code == 200, listing.text
    paths = {e["path"] for e in listing.json()["entries"]}
    assert "workspace/data/in.txt" in paths
    assert "workspace/etc" in paths  # the link itself, as an entry
    for entry in listing.json()["entries"]:
        assert not entry["path"].startswith(
            ("workspace/etc/", "workspace/up/", "workspace/sib/", "workspace/victim/")
        )
        assert entry["path"].count("/") < 4
    links = {e["name"]: e for e in listing.json()["entries"] if e["name"] in {"etc", "sib", "up"}}
    assert all(not e["is_dir"] for e in links.values())


@pytest.mark.parametrize(
    "path",
    [
        "victim/planted.txt",
        "victim/keep.txt",
        "keeplink",
        "sib/data/planted.txt",
        "sibabs/planted.txt",
        "sibfile",
        "up/planted.txt",
        "up/namespaces/planted.txt",
        "victim/new/dir/planted.txt",
        "pw",
    ],
)
def test_writes_through_escaping_symlinks_are_rejected(hostile: LiveServer, trap: Trap, path: str) -> None:
    passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    before = _tree(trap.victim) | _tree(ns_dir(hostile, trap.other)) | _tree(hostile.data_dir, hostile)
    assert_problem(trap.http.post("/write", json={"path": path, "content": "planted"}), 400, "path_rejected")
    assert_problem(trap.http.put(f"/files/{path}", content=b"planted"), 400, "path_rejected")
    assert (trap.victim / "keep.txt").read_text() == "host file"
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == passwd
    other_secret = ns_dir(hostile, trap.other) / "data" / "secret.txt"
    assert other_secret.read_text() == trap.secret
    after = _tree(trap.victim) | _tree(ns_dir(hostile, trap.other)) | _tree(hostile.data_dir, hostile)
    # Only this namespace's own directory may change; nothing appeared elsewhere.
    mine = str(ns_dir(hostile, trap.namespace))
    assert {p for p in after - before if not p.startswith(mine)} == set()


@pytest.mark.parametrize(
    "path",
    [
        "victim/keep.txt",
        "sib/data/secret.txt",
        "sib/data",
        "sibabs/data",
        "etc/hostname",
        "up/staging",
    ],
)
def test_deletes_through_escaping_symlinks_are_rejected(hostile: LiveServer, trap: Trap, path: str) -> None:
    assert_problem(trap.http.post("/delete", json={"path": path}), 400, "path_rejected")
    assert (trap.victim / "keep.txt").read_text() == "host file"
    assert (ns_dir(hostile, trap.other) / "data" / "secret.txt").read_text() == trap.secret
    assert Path("/etc/hostname").exists()
    assert hostile.ctx.runtime.staging.is_dir()  # type: ignore[attr-defined]


def test_symlink_loops_are_client_errors(trap: Trap) -> None:
    for response in (
        trap.http.get("/v1/files/content", params={"path": "loop1"}),
        trap.http.get("/v1/files", params={"path": "loop1"}),
        trap.http.post("/write", json={"path": "loop1/x", "content": "x"}),
        trap.http.post("/delete", json={"path": "loop1/x"}),
    ):
        assert 400 <= response.status_code < 500, response.text
        assert_problem(response, response.status_code)


def test_symlinks_inside_the_namespace_still_work(trap: Trap) -> None:
    # The refusals above are about leaving the namespace, not about symlinks as such.
    content = trap.http.get("/v1/files/content", params={"path": "alias/in.txt"})
    assert content.status_code == 200, content.text
    assert content.json()["content"] == "inside\n"
    listing = trap.http.get("/v1/files", params={"path": "alias"})
    assert [e["path"] for e in listing.json()["entries"]] == ["workspace/alias/in.txt"]


@pytest.mark.parametrize("link", ["sib", "sibabs", "sibfile", "victim", "keeplink", "etc", "up", "pw"])
def test_an_escaping_link_itself_is_deleted_and_its_target_never_touched(
    hostile: LiveServer, trap: Trap, link: str
) -> None:
    # `rm link`: the agent made the link and may remove it; only the link goes.
    mine = ns_dir(hostile, trap.namespace)
    passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    before = _tree(trap.victim) | _tree(ns_dir(hostile, trap.other)) | _tree(hostile.data_dir, hostile)
    assert trap.http.post("/delete", json={"path": link}).status_code == 200
    assert not (mine / link).is_symlink()
    assert (trap.victim / "keep.txt").read_text() == "host file"
    assert (ns_dir(hostile, trap.other) / "data" / "secret.txt").read_text() == trap.secret
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == passwd
    after = _tree(trap.victim) | _tree(ns_dir(hostile, trap.other)) | _tree(hostile.data_dir, hostile)
    assert before - after == {str(mine / link)}


def _tree(root: Path, server: LiveServer | None = None) -> set[str]:
    if not root.exists():
        return set()
    return {str(p) for p in root.rglob("*") if server is None or not in_spares_folder(server, p)}
