"""An exec's ``$SHELL`` is the one bash sets itself, though the supervisor now hands it over.

bash looks ``SHELL`` up in passwd when its environment has none and leaves it unexported; the
agent's supervisor looks it up once and hands it to each call's bash (sparing every call that
NSS lookup), and the script's first line un-exports it again. Each test compares an exec with
a plain bash given the commands' environment without ``SHELL``, for a uid passwd knows and
one it does not (a sandbox's per-namespace uid).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.unit.test_agent import agent
from tests.unit.test_agent_process_cap import SETPRIV, UID, capped_agent, spec
from trove_api.runtimes.channel.session import AgentSession

# What a script can see of $SHELL: its value and attributes, and whether children inherit it.
PROBE = "declare -p SHELL; env | grep -c '^SHELL=' || true"
# The environment the agent gives every command (op_exec), without SHELL.
COMMAND_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/", "LANG": "C.UTF-8", "TERM": "dumb", "USER": "agent"}


def bash_itself(wrapper: Sequence[str] = ()) -> bytes:
    done = subprocess.run(
        [*wrapper, "/bin/bash", "--noprofile", "--norc", "-c", PROBE],
        env=COMMAND_ENV,
        capture_output=True,
        check=True,
    )
    return done.stdout


async def probe_twice(session: AgentSession) -> list[bytes]:
    """The first exec (whose bash still looks $SHELL up) and one after the agent's lookup."""
    first = (await session.exec(spec(PROBE), 1 << 20)).stdout
    await asyncio.sleep(0.5)  # not timed: the lookup (one getent) has ended well before
    return [first, (await session.exec(spec(PROBE), 1 << 20)).stdout]


async def test_shell_is_what_bash_sets_for_a_known_uid(tmp_path: Path) -> None:
    expected = bash_itself()
    assert expected.endswith(b"\n0\n"), expected  # bash leaves it unexported
    async with agent(tmp_path) as session:
        assert await probe_twice(session) == [expected, expected]


@pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv for a uid of its own"
)
async def test_shell_is_what_bash_sets_for_a_uid_passwd_lacks() -> None:
    assert SETPRIV is not None
    expected = bash_itself([SETPRIV, f"--reuid={UID}", f"--regid={UID}", "--clear-groups"])
    assert expected == b'declare -- SHELL="/bin/sh"\n0\n'
    async with capped_agent({}) as session:
        assert await probe_twice(session) == [expected, expected]
