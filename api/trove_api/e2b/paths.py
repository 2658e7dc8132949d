"""E2B paths and Trove paths: E2B's home `/home/user` (the default cwd) is `workspace/`."""

from __future__ import annotations

from trove_core import paths
from trove_core.errors import PathRejectedError

HOME = "/home/user"


def to_trove(e2b_path: str) -> str:
    """The namespace-relative path of an E2B path; anything outside the home is refused."""
    if e2b_path.startswith("/"):
        if e2b_path != HOME and not e2b_path.startswith(HOME + "/"):
            raise PathRejectedError(
                f"Path rejected: {e2b_path[:200]!r} is outside {HOME}, the only directory of a "
                "Trove sandbox reachable through the E2B API"
            )
        e2b_path = e2b_path[len(HOME) :]
    # Prefixed so a relative 'workspace/x' stays a directory named workspace inside the home.
    return paths.normalize(f"{paths.DISPLAY_ROOT}/{e2b_path.lstrip('/')}")


def to_e2b(rel: str) -> str:
    return f"{HOME}/{rel}" if rel else HOME
