"""trove-agent's start-up imports: what asyncio imports but the agent never uses is not loaded.

Each warm local sandbox holds one agent (and its supervisor, a fork of it), so a module loaded at
start-up is paid for per sandbox. Checked in a fresh interpreter, as the sandbox runs it: this
test process has loaded everything long ago.
"""

from __future__ import annotations

import subprocess
import sys

from trove_api.runtimes.channel import AGENT_SOURCE

_LOAD_AGENT = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("trove_agent", {str(AGENT_SOURCE)!r})
agent = importlib.util.module_from_spec(spec)
spec.loader.exec_module(agent)
"""


def _run(script: str) -> str:
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _LOAD_AGENT + script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_agent_starts_without_inspect_and_the_compiler_modules_it_pulls_in() -> None:
    loaded = _run("print(sorted(m for m in ('ast', 'dis', 'opcode') if m in sys.modules))")
    assert loaded == "[]"


def test_inspect_is_the_real_module_at_its_first_use() -> None:
    out = _run(
        "import asyncio, inspect\n"
        "async def coroutine(): pass\n"
        "print(asyncio.iscoroutinefunction(coroutine), asyncio.iscoroutinefunction(print))\n"
        "real = sys.modules['inspect']\n"
        "print(inspect.isfunction(coroutine), 'ast' in sys.modules, real.__file__.endswith('inspect.py'))\n"
        "try:\n"
        "    inspect.no_such_function\n"
        "except AttributeError:\n"
        "    print('AttributeError')\n"
    )
    assert out.splitlines() == ["True False", "True True True", "AttributeError"]


def test_a_deferred_module_first_read_by_many_threads_at_once_is_loaded_once() -> None:
    out = _run(
        "import threading\n"
        "assert 'colorsys' not in sys.modules\n"
        "deferred = agent.DeferredModule('colorsys')\n"
        "sys.modules['colorsys'] = deferred\n"
        "start, got = threading.Barrier(8), []\n"
        "def read():\n"
        "    start.wait()\n"
        "    got.append(deferred.rgb_to_hsv)\n"
        "threads = [threading.Thread(target=read) for _ in range(8)]\n"
        "for thread in threads: thread.start()\n"
        "for thread in threads: thread.join()\n"
        "real = sys.modules['colorsys']\n"
        "print(len(got), len({id(f) for f in got}), real is not deferred, real.rgb_to_hsv is got[0])\n"
    )
    assert out == "8 1 True True"
