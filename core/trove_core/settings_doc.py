"""Render the Settings fields as the Markdown table the README carries (kept in sync by a test)."""

from __future__ import annotations

from pydantic_core import PydanticUndefined

from trove_core.settings import Settings

BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if default is PydanticUndefined or default is None:
            shown = "—"
        elif hasattr(default, "get_secret_value"):
            shown = "(secret)"
        else:
            shown = f"`{default}`"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `TROVE_{name.upper()}` | {shown} | {description} |")
    return "\n".join(rows)


def main() -> None:
    print(BEGIN)
    print(settings_table())
    print(END)


if __name__ == "__main__":
    main()
