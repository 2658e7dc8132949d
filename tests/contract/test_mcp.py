"""The official MCP server (``python -m trove_sdk.mcp.server``, stdio) driven by an MCP client session.

trove-sdk 0.10.0's server is built on ``mcp.server.fastmcp.FastMCP``, which mcp 2.x removed; with
mcp 2.x installed the official server cannot start at all, so these tests skip with that reason.
They need ``mcp>=1.0,<2`` in the environment (the client API used here is the same in 1.x).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.support.sdk import client
from tests.support.server import LiveServer

TOOLS = {"trove_exec", "trove_read", "trove_write", "trove_put_base64", "trove_bootstrap"}


def _official_server_can_start() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "from mcp.server.fastmcp import FastMCP"], capture_output=True, check=False
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _official_server_can_start(),
    reason="trove-sdk 0.10.0 MCP server needs mcp<2 (mcp.server.fastmcp is gone in mcp 2.x)",
)


@asynccontextmanager
async def mcp_session(
    server: LiveServer, namespace: str, api_key: str | None = None
) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "trove_sdk.mcp.server"],
        env={
            "TROVE_API_KEY": api_key or server.workspace_key,
            "TROVE_NAMESPACE": namespace,
            "TROVE_BASE_URL": server.base_url,
            # Same import path as this process (the stdio client passes only a safe env subset).
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        },
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def _call(session: ClientSession, tool: str, **arguments: str) -> str:
    result = await session.call_tool(tool, arguments)
    texts = [block.text for block in result.content if block.type == "text"]
    assert len(texts) == 1, result
    return texts[0]


async def test_mcp_lists_tools_and_prompt_and_each_tool_works(server: LiveServer, namespace: str) -> None:
    async with mcp_session(server, namespace) as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert tools == TOOLS
        prompts = {prompt.name for prompt in (await session.list_prompts()).prompts}
        assert prompts == {"trove_orient"}

        cold = await _call(session, "trove_bootstrap")
        assert cold == f"<workspace>\n  namespace: {namespace}\n  files: 0 (empty)\n</workspace>"

        wrote = await _call(session, "trove_write", path="workspace/plan.md", content="# Plan\nstep 1\n")
        assert wrote == "wrote workspace/plan.md (14 bytes)"
        assert await _call(session, "trove_read", path="workspace/plan.md") == "# Plan\nstep 1\n"

        png = b"\x89PNG\r\n\x1a\n" + bytes(range(32))
        put = await _call(
            session,
            "trove_put_base64",
            path="workspace/img/x.png",
            content_b64=base64.b64encode(png).decode(),
        )
        assert put == f"wrote workspace/img/x.png ({len(png)} bytes)"

        ran = await _call(session, "trove_exec", command="wc -c < workspace/img/x.png; echo oops >&2; exit 3")
        # The official formatter joins "[exit N]" and stdout without a newline.
        assert ran == f"[exit 3]{len(png)}\n--- stderr ---\noops\n"
        piped = await _call(session, "trove_exec", command="cat", stdin="piped")
        assert piped == "[exit 0]piped\n"

        await _call(session, "trove_write", path="workspace/.trove/agent.md", content="## Learned\n- a\n")
        block = await _call(session, "trove_bootstrap")
        assert f"namespace: {namespace}" in block
        assert "  files: 2; last edited " in block
        assert "workspace/plan.md (14B)" in block
        assert f"workspace/img/x.png ({len(png)}B)" in block
        assert "  last_session: |\n    ## Learned\n    - a" in block

        prompt = await session.get_prompt("trove_orient")
        [message] = prompt.messages
        assert message.content.type == "text"
        assert message.content.text == block

    with client(server, namespace) as sdk:
        assert sdk.read_bytes("workspace/img/x.png") == png


async def test_mcp_tool_errors_come_back_as_text(server: LiveServer, namespace: str) -> None:
    async with mcp_session(server, namespace) as session:
        missing = await _call(session, "trove_read", path="workspace/missing.md")
        assert missing == "trove error (HTTP 404): Path not found: workspace/missing.md"
        escape = await _call(session, "trove_write", path="../escape", content="x")
        assert escape.startswith("trove error (HTTP 400): ")
        await _call(
            session,
            "trove_put_base64",
            path="workspace/b.bin",
            content_b64=base64.b64encode(b"\x00\xff").decode(),
        )
        binary = await _call(session, "trove_read", path="workspace/b.bin")
        assert binary.startswith("trove error (HTTP 415): ")


async def test_mcp_with_an_admin_key_reports_403(server: LiveServer, namespace: str) -> None:
    async with mcp_session(server, namespace, server.admin_key) as session:
        denied = await _call(session, "trove_exec", command="echo hi")
        assert denied.startswith("trove error (HTTP 403): ")
