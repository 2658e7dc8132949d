"""Files through the official client: write, upload, reads, listings, init helpers, bootstrap, delete."""

from __future__ import annotations

import io
import re
import secrets

import httpx
import pytest
from trove_sdk import TroveClient, TroveError, TroveNotFoundError

from tests.support.sdk import client
from tests.support.server import LiveServer

MIB = 1024 * 1024
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


# ── write / upload / read ────────────────────────────────────────────────────


def test_write_returns_display_path_and_utf8_size(trove: TroveClient) -> None:
    result = trove.write("workspace/a/b.txt", "hé")
    assert (result.path, result.size_bytes) == ("workspace/a/b.txt", 3)
    assert trove.read_text("workspace/a/b.txt") == "hé"
    # Reads accept the path with or without the workspace/ prefix (and a leading slash).
    assert trove.read_text("a/b.txt") == "hé"
    assert trove.read_text("/workspace/a/b.txt") == "hé"
    # The shell sees the same file.
    assert trove.exec("cat workspace/a/b.txt") == "hé"


def test_write_without_prefix_lands_in_the_same_place(trove: TroveClient) -> None:
    assert trove.write("notes/n.md", "# N").path == "workspace/notes/n.md"
    assert trove.read_text("workspace/notes/n.md") == "# N"


def test_write_overwrites(trove: TroveClient) -> None:
    trove.write("workspace/o.txt", "first version")
    result = trove.write("workspace/o.txt", "2nd")
    assert result.size_bytes == 3
    assert trove.read_text("workspace/o.txt") == "2nd"


def test_write_of_empty_content(trove: TroveClient) -> None:
    assert trove.write("workspace/empty.txt", "").size_bytes == 0
    info = trove.read_file("workspace/empty.txt")
    assert (info.encoding, info.content, info.size_bytes) == ("utf-8", "", 0)


def test_write_over_ten_mib_is_413(trove: TroveClient) -> None:
    with pytest.raises(TroveError) as caught:
        trove.write("workspace/big.txt", "x" * (10 * MIB + 1))
    assert caught.value.status_code == 413
    assert isinstance(caught.value.args[0], str)


def test_write_of_exactly_ten_mib_is_accepted(trove: TroveClient) -> None:
    assert trove.write("workspace/ten.txt", "x" * (10 * MIB)).size_bytes == 10 * MIB


def test_upload_and_read_bytes_round_trip(trove: TroveClient) -> None:
    data = bytes(range(256))
    result = trove.upload("workspace/bin.dat", data)
    assert (result.path, result.size_bytes) == ("workspace/bin.dat", 256)
    assert trove.read_bytes("workspace/bin.dat") == data
    assert trove.read_bytes("bin.dat") == data


def test_upload_accepts_a_file_object_and_creates_parents(trove: TroveClient) -> None:
    result = trove.upload("workspace/deep/er/img.png", io.BytesIO(b"\x89PNG\r\n\x1a\n"))
    assert (result.path, result.size_bytes) == ("workspace/deep/er/img.png", 8)
    assert trove.exec("wc -c < workspace/deep/er/img.png").strip() == "8"


def test_upload_of_empty_body(trove: TroveClient) -> None:
    assert trove.upload("workspace/zero.bin", b"").size_bytes == 0
    assert trove.read_bytes("workspace/zero.bin") == b""


def test_names_with_spaces_and_unicode_round_trip(trove: TroveClient) -> None:
    result = trove.upload("workspace/my dir/ünï code.bin", b"\x00\x01")
    assert result.path == "workspace/my dir/ünï code.bin"
    assert trove.read_bytes("workspace/my dir/ünï code.bin") == b"\x00\x01"
    names = [e.name for e in trove.list_dir("workspace/my dir")]
    assert names == ["ünï code.bin"]
    assert trove.exec("ls 'workspace/my dir'") == "ünï code.bin\n"


def test_read_bytes_full_reports_size_and_no_truncation(trove: TroveClient) -> None:
    trove.upload("workspace/small.bin", b"abc\x00def")
    full = trove.read_bytes_full("workspace/small.bin")
    assert full.content == b"abc\x00def"
    assert full.truncated is False
    assert full.size_bytes == 7


def test_read_file_text_and_binary(trove: TroveClient) -> None:
    trove.write("workspace/t.txt", "text")
    trove.upload("workspace/bin.dat", bytes(range(256)))
    text = trove.read_file("workspace/t.txt")
    assert (text.path, text.encoding, text.content, text.size_bytes) == (
        "workspace/t.txt",
        "utf-8",
        "text",
        4,
    )
    assert text.truncated is False
    assert TIMESTAMP.match(text.modified_at)
    binary = trove.read_file("workspace/bin.dat")
    assert (binary.path, binary.encoding, binary.content) == ("workspace/bin.dat", "binary", None)
    assert binary.size_bytes == 256
    # read() picks the right type; read_text refuses binary client-side (415).
    assert trove.read("workspace/t.txt") == "text"
    assert trove.read("workspace/bin.dat") == bytes(range(256))
    with pytest.raises(TroveError) as caught:
        trove.read_text("workspace/bin.dat")
    assert caught.value.status_code == 415


def test_nul_byte_makes_a_file_binary(trove: TroveClient) -> None:
    trove.upload("workspace/nul.txt", b"abc\x00def")
    assert trove.read_file("workspace/nul.txt").encoding == "binary"


def test_large_text_preview_is_capped_at_one_mib(trove: TroveClient) -> None:
    body = ("0123456789abcde\n" * (2 * MIB // 16))[: 2 * MIB]
    trove.write("workspace/big.txt", body)
    info = trove.read_file("workspace/big.txt")
    assert info.truncated is True
    assert info.size_bytes == 2 * MIB
    assert info.encoding == "utf-8"
    text = trove.read_text("workspace/big.txt")
    assert len(text.encode()) == MIB
    assert text == body[:MIB]
    # The raw download is complete.
    full = trove.read_bytes_full("workspace/big.txt")
    assert (len(full.content), full.truncated, full.size_bytes) == (2 * MIB, False, 2 * MIB)


def test_preview_cut_inside_a_multibyte_char_is_still_text(trove: TroveClient) -> None:
    body = "a" + "é" * MIB  # 1 + 2 MiB bytes: the 1 MiB cut splits an "é"
    trove.write("workspace/accents.txt", body)
    info = trove.read_file("workspace/accents.txt")
    assert info.encoding == "utf-8"
    assert info.truncated is True
    assert info.content is not None
    assert body.startswith(info.content)
    assert len(info.content.encode()) in (MIB - 1, MIB)


def test_missing_file_is_not_found(trove: TroveClient) -> None:
    with pytest.raises(TroveNotFoundError) as caught:
        trove.read_text("workspace/missing")
    assert caught.value.status_code == 404
    assert str(caught.value) == "Path not found: workspace/missing"
    with pytest.raises(TroveNotFoundError):
        trove.read_bytes("workspace/missing.png")
    with pytest.raises(TroveNotFoundError):
        trove.read_file("missing.png")


def test_special_files_are_refused_not_waited_on(server: LiveServer, namespace: str) -> None:
    # A FIFO with no writer would block a naive open() forever.
    with TroveClient(
        api_key=server.workspace_key, namespace=namespace, base_url=server.base_url, timeout=20
    ) as trove:
        trove.exec("mkfifo workspace/pipe")
        for read in (trove.read_file, trove.read_bytes):
            with pytest.raises(TroveError) as caught:
                read("workspace/pipe")
            assert caught.value.status_code == 400
        assert trove.delete("workspace/pipe") == "workspace/pipe"


def test_symlinks_inside_the_namespace_are_followed(trove: TroveClient) -> None:
    trove.write("workspace/data/real.txt", "real")
    trove.exec("ln -s data/real.txt workspace/alias && ln -s data workspace/dlink")
    assert trove.read_text("workspace/alias") == "real"
    assert trove.read_bytes("workspace/alias") == b"real"
    assert [e.name for e in trove.list_dir("workspace/dlink")] == ["real.txt"]
    assert trove.delete("workspace/alias") == "workspace/alias"
    assert trove.read_text("workspace/data/real.txt") == "real"


def test_download_over_the_cap_is_truncated_with_headers(capped_server: LiveServer, namespace: str) -> None:
    with client(capped_server, namespace) as trove:
        data = secrets.token_bytes(1500)
        assert trove.upload("workspace/big.bin", data).size_bytes == 1500
        full = trove.read_bytes_full("workspace/big.bin")
        assert (full.content, full.truncated, full.size_bytes) == (data[:1000], True, 1500)
        with pytest.raises(TroveError) as caught:
            trove.upload("workspace/too-big.bin", secrets.token_bytes(2001))
        assert caught.value.status_code == 413
        with pytest.raises(TroveNotFoundError):
            trove.read_bytes("workspace/too-big.bin")


def test_reading_a_directory_is_400(trove: TroveClient) -> None:
    trove.write("workspace/d/f.txt", "x")
    for read in (trove.read_file, trove.read_bytes):
        with pytest.raises(TroveError) as caught:
            read("workspace/d")
        assert caught.value.status_code == 400


# ── listings ─────────────────────────────────────────────────────────────────


def test_list_dir_orders_dirs_first_then_files_alphabetically(trove: TroveClient) -> None:
    for path in ("workspace/c.txt", "workspace/a.txt", "workspace/zdir/x.txt", "workspace/bdir/y.txt"):
        trove.write(path, "12345")
    entries = trove.list_dir()
    assert [(e.name, e.path, e.is_dir) for e in entries] == [
        ("bdir", "workspace/bdir", True),
        ("zdir", "workspace/zdir", True),
        ("a.txt", "workspace/a.txt", False),
        ("c.txt", "workspace/c.txt", False),
    ]
    assert [e.size_bytes for e in entries] == [None, None, 5, 5]
    assert all(TIMESTAMP.match(e.modified_at) for e in entries)
    assert entries.truncated is False
    # A subdirectory, named with or without the prefix.
    for path in ("workspace/zdir", "zdir", "workspace/zdir/"):
        assert [(e.name, e.path) for e in trove.list_dir(path)] == [("x.txt", "workspace/zdir/x.txt")]


def test_bare_workspace_names_the_root(trove: TroveClient) -> None:
    trove.write("workspace/sub/x.txt", "x")
    for root in ("workspace", "workspace/", "/workspace", ""):
        assert [e.path for e in trove.list_dir(root)] == ["workspace/sub"], root
    with pytest.raises(TroveError) as refused:
        trove.list_dir("/")  # an exec's `ls /` is the system root, not the namespace
    assert refused.value.status_code == 400
    with pytest.raises(TroveError) as caught:
        trove.read_file("workspace")
    assert caught.value.status_code == 400


def test_list_dir_includes_hidden_entries(trove: TroveClient) -> None:
    trove.set_init("true\n")
    trove.write("workspace/.hidden", "h")
    names = [e.name for e in trove.list_dir()]
    assert names == [".trove", ".hidden"]
    recursive = [e.path for e in trove.list_dir(recursive=True)]
    assert "workspace/.trove/init.sh" in recursive


def test_recursive_listing_is_preorder_depth_first(trove: TroveClient) -> None:
    for path in ("workspace/b.txt", "workspace/a/z.txt", "workspace/a/s/q.txt", "workspace/c/d.txt"):
        trove.write(path, "x")
    paths = [e.path for e in trove.list_dir(recursive=True)]
    assert paths == [
        "workspace/a",
        "workspace/a/s",
        "workspace/a/s/q.txt",
        "workspace/a/z.txt",
        "workspace/c",
        "workspace/c/d.txt",
        "workspace/b.txt",
    ]


def test_recursive_listing_caps_at_1000_entries(trove: TroveClient) -> None:
    trove.exec("mkdir -p workspace/many && cd workspace/many && touch f{0000..1099}")
    result = trove.list_dir(recursive=True)
    assert len(result) == 1000
    assert result.truncated is True


def test_recursive_listing_caps_at_20_levels(trove: TroveClient) -> None:
    trove.exec("mkdir -p workspace/" + "/".join(f"d{i}" for i in range(25)))
    result = trove.list_dir(recursive=True)
    assert result.truncated is True
    depths = [e.path.count("/") for e in result]
    assert max(depths) <= 20
    assert len(result) < 25


def test_list_dir_in_a_never_used_namespace_is_empty(server: LiveServer, namespace: str) -> None:
    with client(server, namespace) as fresh:
        assert list(fresh.list_dir()) == []
        assert list(fresh.list_dir(recursive=True)) == []
        assert fresh.list_dir().truncated is False
        assert fresh.bootstrap().file_count == 0


def test_list_dir_of_a_missing_path_is_404_and_of_a_file_is_400(trove: TroveClient) -> None:
    trove.write("workspace/f.txt", "x")
    with pytest.raises(TroveNotFoundError):
        trove.list_dir("workspace/nope")
    with pytest.raises(TroveError) as caught:
        trove.list_dir("workspace/f.txt")
    assert caught.value.status_code == 400


def test_exec_created_files_are_listed(trove: TroveClient) -> None:
    trove.exec("mkdir -p workspace/out && printf 'abc' > workspace/out/r.csv")
    [entry] = trove.list_dir("workspace/out")
    assert (entry.path, entry.size_bytes, entry.is_dir) == ("workspace/out/r.csv", 3, False)


# ── init.sh helpers and bootstrap ────────────────────────────────────────────


def test_init_helpers(trove: TroveClient) -> None:
    assert trove.get_init() is None
    assert trove.clear_init() is False
    written = trove.set_init("cd workspace\n")
    assert written.path == "workspace/.trove/init.sh"
    assert trove.get_init() == "cd workspace\n"
    assert trove.clear_init() is True
    assert trove.clear_init() is False
    assert trove.get_init() is None


def test_bootstrap_excludes_trove_dir_and_sorts_recent_newest_first(trove: TroveClient) -> None:
    trove.write("workspace/old.txt", "o")
    trove.write("workspace/data/mid.csv", "m,m")
    trove.write("workspace/new.md", "nnnn")
    # Fixed mtimes so the order does not depend on the clock resolution.
    trove.exec(
        "touch -d '2021-01-01T00:00:00Z' workspace/old.txt && "
        "touch -d '2022-01-01T00:00:00Z' workspace/data/mid.csv && "
        "touch -d '2023-01-01T00:00:00Z' workspace/new.md"
    )
    trove.set_init("cd workspace/data\n")
    trove.write("workspace/.trove/agent.md", "## Notes\n- cache at workspace/data\n")
    bs = trove.bootstrap()
    assert bs.file_count == 3
    assert [f.path for f in bs.recent_files] == [
        "workspace/new.md",
        "workspace/data/mid.csv",
        "workspace/old.txt",
    ]
    assert bs.last_modified_at == bs.recent_files[0].modified_at
    assert bs.last_modified_at.startswith("2023-01-01T00:00:00")
    assert bs.init_script == "cd workspace/data\n"
    assert bs.agent_memory == "## Notes\n- cache at workspace/data\n"
    assert bs.truncated is False
    block = bs.as_system_prompt_block()
    assert "files: 3; last edited 2023-01-01T00:00:00" in block
    assert "recent: workspace/new.md (4B), workspace/data/mid.csv (3B), workspace/old.txt (1B)" in block
    assert "init.sh: cd workspace/data" in block
    assert "    - cache at workspace/data" in block


def test_bootstrap_of_a_cold_namespace(trove: TroveClient) -> None:
    bs = trove.bootstrap()
    assert (bs.file_count, bs.recent_files, bs.init_script, bs.agent_memory) == (0, [], None, None)
    assert "files: 0 (empty)" in bs.as_system_prompt_block()


# ── delete ───────────────────────────────────────────────────────────────────


def test_delete_is_recursive_and_404_when_missing(trove: TroveClient) -> None:
    trove.write("workspace/a/b.txt", "x")
    trove.write("workspace/a/c/d.txt", "y")
    assert trove.delete("workspace/a") == "workspace/a"
    with pytest.raises(TroveNotFoundError):
        trove.read_text("workspace/a/c/d.txt")
    assert list(trove.list_dir()) == []
    with pytest.raises(TroveNotFoundError) as caught:
        trove.delete("workspace/a")
    assert caught.value.status_code == 404


def test_delete_a_file_without_prefix(trove: TroveClient) -> None:
    trove.write("workspace/f.txt", "x")
    assert trove.delete("f.txt") == "workspace/f.txt"


def test_delete_of_the_namespace_root_is_refused(trove: TroveClient) -> None:
    trove.write("workspace/keep.txt", "x")
    for root in ("workspace", "workspace/", "/"):
        with pytest.raises(TroveError) as caught:
            trove.delete(root)
        assert caught.value.status_code == 400
    assert trove.read_text("workspace/keep.txt") == "x"


# ── path traversal ───────────────────────────────────────────────────────────


@pytest.mark.parametrize("path", ["../x", "workspace/../../x", "a/../../x", "a/..", "x\x00y"])
def test_traversal_and_nul_are_rejected_with_400(trove: TroveClient, path: str) -> None:
    with pytest.raises(TroveError) as caught:
        trove.write(path, "x")
    assert caught.value.status_code == 400
    with pytest.raises(TroveError) as caught:
        trove.read_text(path)
    assert caught.value.status_code == 400
    with pytest.raises(TroveError) as caught:
        trove.delete(path)
    assert caught.value.status_code == 400


def test_traversal_in_an_encoded_upload_url_is_400(server: LiveServer, namespace: str) -> None:
    # httpx collapses literal ".." in URLs itself, so send the percent-encoded form raw.
    headers = {"Authorization": f"Bearer {server.workspace_key}", "X-Namespace": namespace}
    for url in ("/files/a/%2e%2e/%2e%2e/x", "/files/%2E%2E/x", "/files/a%2f..%2f..%2fx"):
        put = httpx.put(server.base_url + url, content=b"x", headers=headers)
        assert put.status_code == 400, url
        get = httpx.get(server.base_url + url, headers=headers)
        assert get.status_code == 400, url
