"""One error tree: every wire code is a class in ``trove_core.errors``, and the README lists them all."""

import ast
import re
from pathlib import Path

from trove_core import errors
from trove_core.errors_doc import BEGIN, END, error_classes, errors_table

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TREE_MODULE = ROOT / "core" / "trove_core" / "errors.py"
SOURCES = [ROOT / "core", ROOT / "api", ROOT / "operator"]


def _tree_names() -> set[str]:
    return {cls.__name__ for cls in error_classes()}


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def test_readme_error_table_matches_the_tree() -> None:
    text = README.read_text()
    between = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert between == errors_table(), "run: python -m trove_core.errors_doc --write README.md"


def test_every_code_the_readme_names_exists() -> None:
    """Codes cited in the README's prose (``400 `path_rejected```, ``(409)``) are codes of the tree."""
    head, rest = README.read_text().split(BEGIN, 1)
    text = head + rest.split(END, 1)[1]
    codes = {cls.code for cls in error_classes()}
    code = r"[a-z]+(?:_[a-z]+)+"
    cited = set(re.findall(rf"\b[1-5]\d\d\s+`({code})`", text))
    cited |= set(re.findall(rf"`[1-5]\d\d ({code})`", text))
    cited |= set(re.findall(rf"`({code})`\s+\([1-5]\d\d\)", text))
    assert cited, "the README's error prose cites no code: has its wording changed?"
    assert cited <= codes, f"README names codes the tree lacks: {sorted(cited - codes)}"


def test_no_wire_error_is_defined_outside_the_tree() -> None:
    """A ``TroveError`` subclass or a ``code = "..."`` anywhere but ``core/trove_core/errors.py``."""
    tree = _tree_names()
    strays = []
    for base in SOURCES:
        for path in sorted(base.rglob("*.py")):
            if path == TREE_MODULE:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.ClassDef):
                    continue
                rel = path.relative_to(ROOT)
                if any(_base_name(b) in tree for b in node.bases):
                    strays.append(f"{rel}: class {node.name}")
                for item in node.body:
                    targets = item.targets if isinstance(item, ast.Assign) else []
                    if any(isinstance(t, ast.Name) and t.id == "code" for t in targets):
                        strays.append(f"{rel}: {node.name}.code")
    assert not strays, f"move these into trove_core.errors: {strays}"


def test_the_tree_in_the_docstring_names_every_class() -> None:
    doc = errors.__doc__ or ""
    missing = [
        cls.__name__ for cls in error_classes() if f"{cls.__name__} ({cls.status} {cls.code})" not in doc
    ]
    assert not missing, f"trove_core.errors' docstring tree lacks: {missing}"


def test_codes_are_snake_case_wire_strings() -> None:
    for cls in error_classes():
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", cls.code), cls
        assert 400 <= cls.status <= 599, cls


def test_the_architecture_map_says_where_every_code_is_raised() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("## Where each error code is raised", 1)[1].split("\n## ", 1)[0]
    missing = sorted({cls.code for cls in error_classes()} - set(re.findall(r"`([a-z_]+)`", section)))
    assert not missing, f"ARCHITECTURE.md's error section lacks: {missing}"
