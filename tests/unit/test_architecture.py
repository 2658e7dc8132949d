"""ARCHITECTURE.md stays a map a newcomer can trust: every package and folder is named in it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "ARCHITECTURE.md"
PACKAGE_ROOTS = ("core", "api", "operator")
# Folders whose every subfolder the map names.
LISTED_PARENTS = ("tests", "images", "charts")
# Build and tool output that may sit in a checkout (all in .gitignore).
NOT_SOURCE = {"__pycache__", "build", "dist", "node_modules"}


def _named() -> set[str]:
    """Every backticked token of the map: `api/trove_api/routers/`, `runtimes/local/`, …"""
    return set(re.findall(r"`([^`\s]+)`", MAP.read_text()))


def _folders(parent: Path) -> list[Path]:
    return sorted(
        path
        for path in parent.iterdir()
        if path.is_dir()
        and path.name not in NOT_SOURCE
        and not path.name.endswith(".egg-info")
        and (not path.name.startswith(".") or path.name == ".ci")
    )


def _packages() -> list[Path]:
    return sorted(init.parent for top in PACKAGE_ROOTS for init in (ROOT / top).rglob("__init__.py"))


def _spellings(package: Path) -> set[str]:
    """A package may be named by its repo path, its path inside the top package, or dotted."""
    rel = package.relative_to(ROOT)
    inner = rel.parts[2:]  # below core/trove_core, api/trove_api, operator/trove_operator
    spellings = {f"{rel.as_posix()}/", ".".join(rel.parts[1:])}
    if inner:
        spellings.add("/".join(inner) + "/")
    return spellings


def test_every_python_package_is_named() -> None:
    named = _named()
    packages = _packages()
    assert len(packages) > 10, "found too few packages: has the layout moved?"
    missing = [str(p.relative_to(ROOT)) for p in packages if not _spellings(p) & named]
    assert not missing, f"ARCHITECTURE.md does not name these packages: {missing}"


def test_every_top_level_folder_is_named() -> None:
    named = _named()
    missing = [f"{p.name}/" for p in _folders(ROOT) if f"{p.name}/" not in named]
    assert not missing, f"ARCHITECTURE.md does not name these folders: {missing}"


def test_every_test_image_and_chart_folder_is_named() -> None:
    named = _named()
    folders = [folder for parent in LISTED_PARENTS for folder in _folders(ROOT / parent)]
    missing = [f"{p.relative_to(ROOT).as_posix()}/" for p in folders]
    missing = [name for name in missing if name not in named]
    assert not missing, f"ARCHITECTURE.md does not name these folders: {missing}"


def test_readme_layout_points_at_the_map() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    assert "(ARCHITECTURE.md)" in layout
