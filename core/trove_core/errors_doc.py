"""Render the error tree as the Markdown table of codes the README carries (kept in sync by a test)."""

from __future__ import annotations

import sys
from pathlib import Path

from trove_core import errors

BEGIN = "<!-- error-codes:begin -->"
END = "<!-- error-codes:end -->"


def error_classes() -> list[type[errors.TroveError]]:
    """Every class of the one tree, root first, then by status and code."""
    found: list[type[errors.TroveError]] = []
    pending: list[type[errors.TroveError]] = [errors.TroveError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        # Only the tree's own module: a subclass defined elsewhere is what test_errors refuses.
        pending.extend(sub for sub in cls.__subclasses__() if sub.__module__ == errors.__name__)
    return sorted(found, key=lambda cls: (cls is not errors.TroveError, cls.status, cls.code, cls.__name__))


def errors_table() -> str:
    rows = ["| status | code | title | class |", "|---|---|---|---|"]
    for cls in error_classes():
        title = cls.title.replace("|", "\\|")
        rows.append(f"| {cls.status} | `{cls.code}` | {title} | `{cls.__name__}` |")
    return "\n".join(rows)


def refresh(readme: Path) -> None:
    """Replace the table between the markers in ``readme``."""
    text = readme.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{errors_table()}\n{END}{tail}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        refresh(Path(sys.argv[2]))
        return
    print(BEGIN)
    print(errors_table())
    print(END)


if __name__ == "__main__":
    main()
