"""Path traversal: '..', percent-encoded dots, NUL bytes and absolute paths never leave the namespace."""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from trove_sdk import TroveError

from tests.hostile.helpers import assert_problem, ns_dir
from tests.support.sdk import client
from tests.support.server import LiveServer

TRAVERSALS = [
    "..",
    "../",
    "../x",
    "../../../../../../tmp/{tok}",
    "a/../../{tok}",
    "workspace/../{tok}",
    "workspace/../../{tok}",
    "/../{tok}",
    "a/b/../../../{tok}",
    "./../{tok}",
]
NULS = ["a\x00b", "\x00", "dir/\x00/x", "{tok}\x00.txt"]


def _spell(template: str, tok: str) -> str:
    return template.replace("{tok}", f"trove-escape-{tok}")


def _assert_no_trace(server: LiveServer, tok: str) -> None:
    """Nothing named after ``tok`` exists anywhere the server could have written."""
    marker = f"trove-escape-{tok}"
    assert not (Path("/tmp") / marker).exists()
    roots = {server.data_dir.resolve(), server.ctx.runtime.root.parent.resolve()}  # type: ignore[attr-defined]
    for root in roots:
        for path in root.rglob("*"):
            assert marker not in path.name, path


@pytest.fixture
def tok() -> str:
    return secrets.token_hex(4)


@pytest.mark.parametrize("template", TRAVERSALS + NULS)
def test_write_traversal_is_rejected(api: httpx.Client, hostile: LiveServer, template: str, tok: str) -> None:
    assert_problem(
        api.post("/write", json={"path": _spell(template, tok), "content": "x"}), 400, "path_rejected"
    )
    _assert_no_trace(hostile, tok)


@pytest.mark.parametrize("template", TRAVERSALS + NULS)
def test_read_list_delete_traversal_is_rejected(api: httpx.Client, template: str, tok: str) -> None:
    # A namespace that exists, so nothing short-circuits on "empty namespace".
    assert api.post("/write", json={"path": "keep.txt", "content": "keep"}).status_code == 200
    path = _spell(template, tok)
    assert_problem(api.get("/v1/files/content", params={"path": path}), 400, "path_rejected")
    assert_problem(api.get("/v1/files", params={"path": path}), 400, "path_rejected")
    assert_problem(api.get("/v1/files", params={"path": path, "recursive": "true"}), 400, "path_rejected")
    assert_problem(api.post("/delete", json={"path": path}), 400, "path_rejected")
    assert api.get("/v1/files/content", params={"path": "keep.txt"}).json()["content"] == "keep"


@pytest.mark.parametrize(
    "raw_path",
    [
        "/files/%2e%2e/%2e%2e/%2e%2e/tmp/{tok}",
        "/files/%2E%2E/{tok}",
        "/files/a/%2e%2e/%2e%2e/{tok}",
        "/files/..%2f..%2f{tok}",
        "/files/a%2F..%2F..%2F{tok}",
        "/files/workspace/%2e%2e/{tok}",
        "/files/%2e%2e",
        "/files/a%00b",
        "/files/{tok}%00.txt",
    ],
)
def test_percent_encoded_traversal_in_upload_and_download(
    api: httpx.Client, hostile: LiveServer, raw_path: str, tok: str
) -> None:
    assert api.post("/write", json={"path": "keep.txt", "content": "keep"}).status_code == 200
    # httpx would re-normalise a URL; send the exact bytes as the raw path.
    target = raw_path.replace("{tok}", f"trove-escape-{tok}")
    put = api.build_request("PUT", "/files/x", content=b"escaped")
    put.url = put.url.copy_with(raw_path=target.encode())
    assert_problem(api.send(put), 400, "path_rejected")
    get = api.build_request("GET", "/files/x")
    get.url = get.url.copy_with(raw_path=target.encode())
    assert_problem(api.send(get), 400, "path_rejected")
    _assert_no_trace(hostile, tok)


def test_dot_segments_in_a_plain_url_never_reach_outside(
    api: httpx.Client, hostile: LiveServer, tok: str
) -> None:
    # Unencoded dot segments: whatever the client or server does with them, nothing leaves.
    for raw in (f"/files/../../tmp/trove-escape-{tok}", f"/files/a/../../trove-escape-{tok}"):
        request = api.build_request("PUT", "/files/x", content=b"escaped")
        request.url = request.url.copy_with(raw_path=raw.encode())
        response = api.send(request)
        assert response.status_code in (400, 404, 405), response.text
        assert_problem(response, response.status_code)
    _assert_no_trace(hostile, tok)


@pytest.mark.parametrize("absolute", ["/etc/passwd", "/tmp/{tok}", "/", "//etc//passwd", "/workspacex/{tok}"])
def test_absolute_paths_outside_workspace_are_refused_by_every_endpoint(
    api: httpx.Client, hostile: LiveServer, namespace: str, tok: str, absolute: str
) -> None:
    # An exec sees /etc/passwd as the system's file; the file API must not give it a second
    # meaning (the namespace's etc/passwd), so every endpoint refuses it alike.
    path = _spell(absolute, tok)
    in_url = quote(path, safe="")
    written = api.post("/write", json={"path": path, "content": "inside"})
    body = assert_problem(written, 400, "path_rejected")
    assert "outside /workspace" in str(body["detail"])
    assert_problem(api.put(f"/files/{in_url}", content=b"inside"), 400, "path_rejected")
    assert_problem(api.get(f"/files/{in_url}"), 400, "path_rejected")
    assert_problem(api.get("/v1/files", params={"path": path}), 400, "path_rejected")
    assert_problem(api.get("/v1/files/content", params={"path": path}), 400, "path_rejected")
    assert_problem(api.post("/delete", json={"path": path}), 400, "path_rejected")
    _assert_no_trace(hostile, tok)
    assert not (ns_dir(hostile, namespace) / "etc").exists()


def test_absolute_paths_under_workspace_are_the_namespace(api: httpx.Client, namespace: str) -> None:
    for spelling in ("/workspace/abs.txt", "//workspace/abs.txt", "workspace/abs.txt"):
        written = api.post("/write", json={"path": spelling, "content": spelling})
        assert written.status_code == 200, written.text
        assert written.json()["path"] == "workspace/abs.txt"
        content = api.get("/v1/files/content", params={"path": spelling})
        assert content.json()["content"] == spelling
    assert api.put(f"/files/{quote('/workspace/up.bin', safe='')}", content=b"x").status_code == 200
    assert api.get("/files/%2Fworkspace%2Fup.bin").content == b"x"
    listing = api.get("/v1/files", params={"path": "/workspace/"})
    assert {e["path"] for e in listing.json()["entries"]} == {"workspace/abs.txt", "workspace/up.bin"}
    assert api.post("/delete", json={"path": "/workspace/abs.txt"}).json()["deleted"] == "workspace/abs.txt"


def test_official_client_sees_400_for_traversal(hostile: LiveServer, namespace: str, tok: str) -> None:
    with client(hostile, namespace) as trove:
        for call in (
            lambda: trove.write(f"../trove-escape-{tok}", "x"),
            lambda: trove.read_text(f"../trove-escape-{tok}"),
            lambda: trove.list_dir("workspace/../.."),
            lambda: trove.delete("../../etc"),
            lambda: trove.write("a\x00b", "x"),
        ):
            with pytest.raises(TroveError) as info:
                call()
            assert info.value.status_code == 400
    _assert_no_trace(hostile, tok)


@pytest.mark.parametrize("path", ["\ud800", "a/\udfff", "x\udc80y"])
def test_lone_surrogates_are_rejected_not_500(api: httpx.Client, path: str) -> None:
    # JSON can spell a lone surrogate ("\ud800"); no file can have that name.
    escaped = path.encode("unicode_escape").decode()
    body = '{"path": "%s", "content": "x"}' % escaped  # noqa: UP031 - literal JSON text
    response = api.post("/write", content=body, headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "path_rejected")
    delete = '{{"path": "{}"}}'.format(path.encode("unicode_escape").decode())
    assert_problem(api.post("/delete", content=delete, headers={"Content-Type": "application/json"}), 400)


def test_non_utf8_names_made_by_exec_do_not_break_listing(api: httpx.Client) -> None:
    made = api.post(
        "/v1/exec",
        json={"command": "mkdir -p workspace/d && touch workspace/d/$'\\xff\\xfe'bad workspace/d/good"},
    )
    assert made.status_code == 200, made.text
    for params in ({"path": "d"}, {"path": "workspace/", "recursive": "true"}):
        listing = api.get("/v1/files", params=params)
        assert listing.status_code == 200, listing.text
        names = [e["name"] for e in listing.json()["entries"]]
        assert "good" in names
    assert api.get("/v1/files/content", params={"path": "d/good"}).status_code == 200
