"""trove_core.paths: every client path becomes a clean namespace-relative path, or is refused."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trove_core.errors import PathRejectedError
from trove_core.paths import (
    MAX_COMPONENT_BYTES,
    MAX_PATH_BYTES,
    basename,
    display,
    normalize,
    parent,
    printable,
)

# Path-ish text: mostly separators, dots and the prefix, so the interesting spellings are common.
_PIECES = st.sampled_from(
    ["/", "//", ".", "..", "...", "workspace", "a", "b c", "é", "\x00", "\\", "%2e", " ", "\udc80", "\ud800"]
)
_PATHS = st.one_of(
    st.lists(_PIECES, max_size=12).map("".join),
    st.lists(_PIECES, max_size=8).map("/".join),
    st.text(max_size=300),
    st.text(st.characters(exclude_categories=()), max_size=50),  # lone surrogates included
)


@pytest.mark.parametrize(
    ("raw", "rel"),
    [
        ("", ""),
        (".", ""),
        ("workspace", ""),
        ("workspace/", ""),
        ("/workspace/", ""),
        ("a.txt", "a.txt"),
        ("workspace/a.txt", "a.txt"),
        ("/workspace/a/b.txt", "a/b.txt"),
        ("a//./b/", "a/b"),
        ("//workspace//./a", "a"),
        ("/workspace", ""),
        ("workspace/workspace/x", "workspace/x"),  # only one prefix is dropped
        ("workspacex/y", "workspacex/y"),
        ("a/workspace/b", "a/workspace/b"),
        ("...", "..."),
        ("..a/b..", "..a/b.."),
        ("%2e%2e/x", "%2e%2e/x"),  # no percent-decoding here: that is the HTTP layer's job
    ],
)
def test_normalize_examples(raw: str, rel: str) -> None:
    assert normalize(raw) == rel


@pytest.mark.parametrize(
    "raw",
    [
        "..",
        "../x",
        "a/../b",
        "a/..",
        "/..",
        "workspace/../etc",
        "workspace/a/../../b",
        "a/\x00",
        "\x00",
        "a\x00b",
    ],
)
def test_normalize_rejects_traversal_and_nul(raw: str) -> None:
    with pytest.raises(PathRejectedError) as info:
        normalize(raw)
    assert info.value.code == "path_rejected"
    assert info.value.status == 400


@pytest.mark.parametrize("raw", ["/", "///", "/etc/passwd", "/tmp/x", "//a//./b/", "/./etc", "/workspacex/y"])
def test_normalize_rejects_absolute_paths_outside_workspace(raw: str) -> None:
    # In an exec /etc/passwd is the system's file: the file API must not give it another meaning.
    with pytest.raises(PathRejectedError) as info:
        normalize(raw)
    assert info.value.status == 400
    assert "outside /workspace" in info.value.detail


def test_normalize_rejects_overlong() -> None:
    normalize("a" * MAX_COMPONENT_BYTES)
    with pytest.raises(PathRejectedError):
        normalize("a" * (MAX_COMPONENT_BYTES + 1))
    with pytest.raises(PathRejectedError):
        normalize("é" * (MAX_COMPONENT_BYTES // 2 + 1))  # bytes, not characters
    with pytest.raises(PathRejectedError):
        normalize("/".join(["a" * 100] * (MAX_PATH_BYTES // 100 + 1)))


@pytest.mark.parametrize("raw", ["\ud800", "a/\udfff/b", "x\udc80"])
def test_normalize_rejects_lone_surrogates(raw: str) -> None:
    # JSON can carry "\ud800"; such a name can be neither stored nor echoed back as UTF-8.
    with pytest.raises(PathRejectedError):
        normalize(raw)


@given(_PATHS)
@example("workspace/../x")
@example("a/./../b")
@example("/" * 5000)
def test_normalize_property(raw: str) -> None:
    try:
        rel = normalize(raw)
    except PathRejectedError as exc:
        rejected = exc
    else:
        rejected = None
    if rejected is not None:
        assert rejected.code == "path_rejected"
        assert isinstance(rejected.detail, str)
        assert rejected.detail
        return
    assert "\x00" not in rel
    assert not raw.startswith("/") or raw.lstrip("/").startswith("workspace")
    assert not rel.startswith("/")
    assert not rel.endswith("/")
    if rel:
        for part in rel.split("/"):
            assert part not in ("", ".", "..")
    rel.encode("utf-8")  # always representable in a JSON response
    # display() and normalize() are inverses on normalized paths.
    assert normalize(display(rel)) == rel


def test_display() -> None:
    assert display("") == "workspace/"
    assert display("a/b") == "workspace/a/b"


def test_basename_parent() -> None:
    assert basename("a/b/c.txt") == "c.txt"
    assert basename("top") == "top"
    assert parent("a/b/c.txt") == "a/b"
    assert parent("top") == ""


def test_printable() -> None:
    assert printable("plain/é") == "plain/é"
    assert printable("d/\udcff\udcfebad") == "d/\ufffd\ufffdbad"
    printable("\udc80").encode("utf-8")
