"""Render the Settings fields as the Markdown table the README carries (kept in sync by a test)."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from trove_core.settings import Settings

BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"


def settings_table(model: type[BaseSettings] = Settings) -> str:
    """``model``'s fields as rows (the operator renders its own ``OperatorSettings`` with this)."""
    prefix = model.model_config.get("env_prefix") or ""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in model.model_fields.items():
        default = field.default
        if default is PydanticUndefined or default is None:
            shown = "—"
        elif hasattr(default, "get_secret_value"):
            shown = "(secret)"
        else:
            shown = f"`{default}`"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{name.upper()}` | {shown} | {description} |")
    return "\n".join(rows)


def refresh(readme: Path) -> None:
    """Replace the table between the markers in ``readme``."""
    text = readme.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{settings_table()}\n{END}{tail}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        refresh(Path(sys.argv[2]))
        return
    print(BEGIN)
    print(settings_table())
    print(END)


if __name__ == "__main__":
    main()
