"""README stays true: its settings table is the one generated from Settings."""

from pathlib import Path

from trove_core.settings_doc import BEGIN, END, settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_matches_code() -> None:
    text = README.read_text()
    between = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert between == settings_table(), "run: python -m trove_core.settings_doc and paste into README"


def test_readme_lists_every_make_target() -> None:
    makefile = (README.parent / "Makefile").read_text()
    targets = [
        line.split(":", 1)[0]
        for line in makefile.splitlines()
        if "## " in line and line[:1].isalpha() and ":" in line
    ]
    text = README.read_text()
    missing = [t for t in targets if f"make {t}" not in text]
    assert not missing, f"README does not mention: {missing}"
