"""Render ``OperatorSettings`` as the README's operator settings table (kept in sync by a test)."""

from __future__ import annotations

from trove_core.settings_doc import settings_table
from trove_operator.settings import OperatorSettings

BEGIN = "<!-- operator-settings-table:begin -->"
END = "<!-- operator-settings-table:end -->"


def operator_settings_table() -> str:
    return settings_table(OperatorSettings)


def main() -> None:
    print(BEGIN)
    print(operator_settings_table())
    print(END)


if __name__ == "__main__":
    main()
