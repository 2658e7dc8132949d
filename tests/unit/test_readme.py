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


def test_readme_mcp_block_matches_the_official_server() -> None:
    """The MCP client block names the command and exactly the variables trove-mcp reads."""
    import ast
    import json
    from importlib import metadata

    import trove_sdk.mcp.server as official

    text = README.read_text()
    block = text.split('"mcpServers"', 1)[1]
    config = json.loads('{"mcpServers"' + block.split("\n```", 1)[0])
    entry = config["mcpServers"]["trove"]
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    assert scripts[entry["command"]] == "trove_sdk.mcp.server:main"
    source = Path(official.__file__).read_text()
    read = {
        node.args[0].value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", "") == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and str(node.args[0].value).startswith("TROVE_")
    }
    assert set(entry["env"]) == read
    assert '"mcp>=1.0,<2"' in text
