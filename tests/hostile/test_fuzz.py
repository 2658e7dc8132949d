"""Property tests against the live server: generated paths and namespace names never cause a 5xx
and never touch anything outside the namespace they name."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trove_sdk import TroveError

from tests.hostile.helpers import assert_problem, in_spares_folder, ns_dir, raw_client
from tests.support.sdk import client
from tests.support.server import LiveServer

_PIECES = st.sampled_from(
    [
        "/",
        "//",
        ".",
        "..",
        "...",
        "workspace",
        "a",
        "d",
        "é",
        " ",
        "\\",
        "%2e",
        "%2f",
        "%00",
        "\x00",
        "\ud800",
        "\udcff",
        "~",
        "$HOME",
        "*",
        "?",
        "#",
        "\n",
        "\t",
        "x" * 300,
        "etc",
        "up",
        "sib",
    ]
)
PATHS = st.one_of(
    st.lists(_PIECES, max_size=10).map("".join),
    st.lists(_PIECES, max_size=6).map("/".join),
    st.text(st.characters(exclude_categories=()), max_size=40),
)
FUZZ = settings(
    max_examples=60, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def _outside(server: LiveServer, namespace: str) -> dict[str, tuple[int, int]]:
    """Every file and directory of the server's data outside ``namespace``, with size and mtime."""
    mine = ns_dir(server, namespace)
    found = {}
    roots = {server.data_dir.resolve(), server.ctx.runtime.root.parent.resolve()}  # type: ignore[attr-defined]
    for root in roots:
        for path in root.rglob("*"):
            if path == mine or mine in path.parents or path.name.startswith("trove.db"):
                continue
            if in_spares_folder(server, path):
                continue
            st_ = path.lstat()
            found[str(path)] = (st_.st_size, st_.st_mtime_ns if not path.is_dir() else 0)
    return found


def _json(payload: dict[str, str]) -> bytes:
    # json.dumps keeps lone surrogates as \\ud800 escapes; httpx's json= would refuse them.
    return json.dumps(payload).encode()


def _send(http: httpx.Client, method: str, raw_target: str, body: bytes | None = None) -> httpx.Response:
    request = http.build_request(method, "/", content=body)
    request.url = request.url.copy_with(raw_path=raw_target.encode("ascii"))
    return http.send(request)


def _no_5xx(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.method, response.request.url, response.text)
    if response.status_code >= 400:
        assert_problem(response, response.status_code)


def test_generated_paths_never_5xx_or_escape(hostile: LiveServer) -> None:
    namespace = "fuzz-" + secrets.token_hex(4)
    other = namespace + "-other"
    with raw_client(hostile, other) as http_other:
        assert http_other.post("/write", json={"path": "d/keep.txt", "content": "keep"}).status_code == 200
    http = raw_client(hostile, namespace)
    setup = http.post(
        "/v1/exec",
        json={
            "command": f"mkdir -p workspace/d; ln -s /etc workspace/etc; "
            f"ln -s ../../.. workspace/up; ln -s ../{other} workspace/sib"
        },
    )
    assert setup.status_code == 200, setup.text
    before = _outside(hostile, namespace)
    headers = {"Content-Type": "application/json"}

    @given(path=PATHS)
    @FUZZ
    def probe(path: str) -> None:
        # Raw URLs: httpx would refuse (or re-normalise) some of these spellings itself.
        encoded = quote(path.encode("utf-8", "surrogatepass"), safe="")
        _no_5xx(http.post("/write", content=_json({"path": path, "content": "fuzz"}), headers=headers))
        _no_5xx(_send(http, "GET", f"/v1/files/content?path={encoded}"))
        _no_5xx(_send(http, "GET", f"/v1/files?path={encoded}&recursive=true"))
        in_url = quote(path.encode("utf-8", "surrogatepass"), safe="/")
        _no_5xx(_send(http, "PUT", f"/files/{in_url}", b"fuzz"))
        _no_5xx(_send(http, "GET", f"/files/{in_url}"))
        _no_5xx(http.post("/delete", content=_json({"path": path}), headers=headers))

    try:
        probe()
    finally:
        http.close()
    assert _outside(hostile, namespace) == before
    assert (ns_dir(hostile, other) / "d" / "keep.txt").read_text() == "keep"
    assert Path("/etc/passwd").exists()


def test_generated_paths_through_the_official_client(hostile: LiveServer) -> None:
    namespace = "fuzz-sdk-" + secrets.token_hex(4)
    before = _outside(hostile, namespace)
    with client(hostile, namespace) as trove:

        @given(path=PATHS.filter(lambda p: "\ud800" not in p and "\udcff" not in p))
        @FUZZ
        def probe(path: str) -> None:
            for call in (
                lambda: trove.write(path, "fuzz"),
                lambda: trove.read_file(path),
                lambda: trove.list_dir(path),
                lambda: trove.upload(path, b"fuzz"),
                lambda: trove.delete(path),
            ):
                status = _status_of(call)
                assert status is None or status < 500, (path, status)

        probe()
    assert _outside(hostile, namespace) == before


def _status_of(call: Callable[[], object]) -> int | None:
    """The HTTP status a client call ended with (None: success, or no request could be formed)."""
    try:
        call()
    except TroveError as exc:
        return exc.status_code if exc.status_code is not None else 599
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError):
        return None  # the client could not even form the request (e.g. a bad URL)
    return None


NAME_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
NAMES = st.one_of(
    st.text(NAME_CHARS, min_size=1, max_size=140),
    st.text(st.sampled_from("aZ09_-./ \\%é"), min_size=1, max_size=130),
    st.integers(120, 135).map(lambda n: "n" * n),
).filter(lambda n: n == n.strip(" \t"))  # HTTP itself cannot carry edge whitespace in a header


def test_generated_namespace_names(hostile: LiveServer) -> None:
    import re

    valid = re.compile(r"[A-Za-z0-9_-]{1,128}")
    root: Path = hostile.ctx.runtime.root / hostile.workspace_id  # type: ignore[attr-defined]
    seen: set[str] = set()

    with httpx.Client(base_url=hostile.base_url, timeout=60) as http:

        @given(name=NAMES)
        @FUZZ
        def probe(name: str) -> None:
            headers = {
                "Authorization": f"Bearer {hostile.workspace_key}",
                "X-Namespace": name.encode("utf-8"),
            }
            response = http.post("/write", json={"path": "probe.txt", "content": "x"}, headers=headers)
            _no_5xx(response)
            if valid.fullmatch(name.strip()):
                assert response.status_code == 200, response.text
                seen.add(name.strip())
            elif name.strip():
                assert_problem(response, 400, "namespace_invalid")
            listing = http.get("/v1/files", headers=headers)
            _no_5xx(listing)

        probe()
    for entry in root.iterdir():
        assert valid.fullmatch(entry.name) or entry.name.startswith("."), entry
    for name in seen:
        assert (root / name / "probe.txt").read_text() == "x"
