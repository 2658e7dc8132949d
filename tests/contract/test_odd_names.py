"""Every name the filesystem can hold works on every file endpoint: newline, tab, CR, %, #, ?…

Starlette's ``path`` convertor (``.*``) stops at a newline, so ``GET /files/a%0Ab`` found no
route, and its trailing ``$`` matched before a final newline, so ``GET /files/a%0A`` served
``a``. Raw httpx sends each name percent-encoded; the official client goes as far as it can:
its ``upload``/``read_bytes`` put the name in the URL unencoded, so names with control
characters, ``#``, ``?`` or ``%XX`` cannot be expressed through those two calls (a client
limit: httpx refuses the control characters, and ``#``/``?`` end the path).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from trove_sdk import TroveClient

from tests.support.server import LiveServer

NAMES = [
    "new\nline.txt",
    "trailing-newline\n",
    "\nleading",
    "tab\there",
    "carriage\rreturn",
    "crlf\r\n",
    "percent%.txt",
    "percent%41-escape",
    "hash#frag",
    "question?mark=1",
    "spaces in  name ",
    "unicode-é-☃-😀",
    "mixed \n\t%#?é",
]
# The names the official client can put in a URL unencoded (see the module docstring).
SDK_URL_SAFE = [n for n in NAMES if not any(c in n for c in "\n\t\r#?") and "%41" not in n]


def _url(name: str, directory: str = "odd") -> str:
    return "/files/" + quote(f"{directory}/{name}", safe="/")


@pytest.fixture
def http(server: LiveServer, namespace: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.workspace_key}", "X-Namespace": namespace}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as raw:
        yield raw


def _listed(http: httpx.Client, directory: str = "odd") -> set[str]:
    listing = http.get("/v1/files", params={"path": directory})
    assert listing.status_code == 200, listing.text
    return {entry["name"] for entry in listing.json()["entries"]}


@pytest.mark.parametrize("name", NAMES)
def test_raw_http_every_file_endpoint(http: httpx.Client, name: str) -> None:
    # A sibling without the odd character: the route must never fall back to it.
    stem = name.rstrip("\r\n") or "stem"
    assert http.post("/write", json={"path": f"odd/{stem}-sibling", "content": "sibling"}).status_code == 200
    if stem != name:
        assert http.post("/write", json={"path": f"odd/{stem}", "content": "stem"}).status_code == 200

    written = http.post("/write", json={"path": f"odd/{name}", "content": "written"})
    assert written.status_code == 200, written.text
    assert written.json()["path"] == f"workspace/odd/{name}"
    assert name in _listed(http)
    downloaded = http.get(_url(name))
    assert downloaded.status_code == 200, downloaded.text
    assert downloaded.content == b"written"
    assert http.head(_url(name)).headers["x-trove-size"] == "7"

    replaced = http.put(_url(name), content=b"uploaded")
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["path"] == f"workspace/odd/{name}"
    assert http.get(_url(name)).content == b"uploaded"
    content = http.get("/v1/files/content", params={"path": f"odd/{name}"}).json()
    assert content["content"] == "uploaded"
    assert content["path"] == f"workspace/odd/{name}"
    if stem != name:
        assert http.get(_url(stem)).content == b"stem"

    deleted = http.post("/delete", json={"path": f"odd/{name}"})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] == f"workspace/odd/{name}"
    assert name not in _listed(http)
    assert http.get(_url(name)).status_code == 404
    assert http.get(_url(f"{stem}-sibling")).content == b"sibling"


def test_upload_creates_odd_names_that_exec_sees(http: httpx.Client) -> None:
    for number, name in enumerate(NAMES):
        created = http.put(_url(name, "up"), content=str(number).encode())
        assert created.status_code == 200, (name, created.text)
    assert _listed(http, "up") == set(NAMES)
    counted = http.post(
        "/v1/exec", json={"command": "find workspace/up -type f -print0 | tr -cd '\\0' | wc -c"}
    )
    assert counted.json()["stdout"].strip() == str(len(NAMES)), counted.text
    for number, name in enumerate(NAMES):
        assert http.get(_url(name, "up")).content == str(number).encode(), name


@pytest.mark.parametrize("name", NAMES)
def test_official_client_on_odd_names(trove: TroveClient, name: str) -> None:
    path = f"workspace/sdk/{name}"
    assert trove.write(path, "written").path == path
    assert name in {entry.name for entry in trove.list_dir("workspace/sdk")}
    assert trove.read_text(path) == "written"
    if name in SDK_URL_SAFE:
        assert trove.upload(path, b"uploaded").path == path
        assert trove.read_bytes(path) == b"uploaded"
        assert trove.read_text(path) == "uploaded"
    assert trove.delete(path) == path
    assert name not in {entry.name for entry in trove.list_dir("workspace/sdk")}
