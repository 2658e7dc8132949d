"""Pure path rules: every path a client sends becomes a clean namespace-relative POSIX path.

The agent sees its namespace root as ``workspace/``. Clients send paths with or without that
prefix (the SDK strips it on some calls and not on others, WIRE.md 1.4), so one leading
``workspace`` component is dropped. An absolute path must name ``/workspace/...``: inside a
sandbox ``/etc/passwd`` is the system's file, so taking it to mean the namespace's
``etc/passwd`` would give one path two meanings; any other absolute path is refused.
``..`` and NUL are refused outright rather than resolved, so no spelling can climb out.
Symlinks are the runtime's business, since only it can see the filesystem.
"""

from __future__ import annotations

from typing import Final

from trove_core.errors import PathRejectedError

DISPLAY_ROOT: Final = "workspace"
MAX_COMPONENT_BYTES: Final = 255
MAX_PATH_BYTES: Final = 4096


def normalize(raw: str) -> str:
    """Return the namespace-relative form of ``raw`` ("" is the namespace root)."""
    if "\x00" in raw:
        raise PathRejectedError("Path rejected: it contains a NUL byte")
    try:
        encoded = raw.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (JSON can carry "\ud800") names no file and cannot be echoed back.
        raise PathRejectedError("Path rejected: it is not valid Unicode (lone surrogate)") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise PathRejectedError(f"Path rejected: longer than {MAX_PATH_BYTES} bytes")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathRejectedError(f"Path rejected: '..' is not allowed ({_shorten(raw)})")
    if raw.startswith("/") and (not parts or parts[0] != DISPLAY_ROOT):
        raise PathRejectedError(
            f"Path rejected: absolute path {_shorten(raw)!r} is outside /{DISPLAY_ROOT}; an exec sees "
            f"it as the system's file, not the namespace's. Use '{DISPLAY_ROOT}/...' or a relative path"
        )
    if parts and parts[0] == DISPLAY_ROOT:
        parts = parts[1:]
    for part in parts:
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise PathRejectedError(f"Path rejected: a component is longer than {MAX_COMPONENT_BYTES} bytes")
    return "/".join(parts)


def display(rel: str) -> str:
    """The form every response uses: ``workspace/<rel>`` (``workspace/`` for the root)."""
    return f"{DISPLAY_ROOT}/{rel}" if rel else f"{DISPLAY_ROOT}/"


def printable(name: str) -> str:
    """``name`` as valid UTF-8 for a response: bytes a command wrote that are not UTF-8 (held
    as surrogate escapes) become U+FFFD instead of breaking the JSON encoder."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def basename(rel: str) -> str:
    return rel.rsplit("/", 1)[-1]


def parent(rel: str) -> str:
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


def _shorten(raw: str, limit: int = 200) -> str:
    return raw if len(raw) <= limit else raw[:limit] + "…"
