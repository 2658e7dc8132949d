"""A command against its own sandbox agent: leaving its call, reaching the channel, planting code.

Runs on both backends through the HTTP API (the official client where it can express the
attack): the local one here, the Kubernetes one under ``make e2e``. Each stray process sleeps
for a duration no other test uses, and is looked for from a following exec and from the host.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import pytest

from tests.hostile.helpers import MIB, exec_json, raw_client
from tests.support.sdk import client
from tests.support.server import LiveServer

ESCAPES = {
    "setsid_without_marker": "setsid env -u TROVE_EXEC_TAG sleep {nap} >/dev/null 2>&1 < /dev/null &",
    "double_fork": "( ( sleep {nap} >/dev/null 2>&1 & ) & )",
    "nohup": "nohup sleep {nap} >/dev/null 2>&1 &",
    "disown": "sleep {nap} >/dev/null 2>&1 & disown",
    "setsid_double_fork": "( setsid sh -c 'sleep {nap} & ' >/dev/null 2>&1 & )",
}
# The call ends only once the stray runs as ``sleep <nap>`` (setsid and env have exec'd).
RUNNING = "until pgrep -f '^sleep {nap}$' >/dev/null; do sleep 0.01; done"
COUNT = "pgrep -c -f '^sleep {nap}$' || true"


def _nap() -> str:
    return f"{400 + secrets.randbelow(100)}.{secrets.randbelow(10**6):06d}"


def _host_sleepers(nap: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.split(b"\0")[:2] == [b"sleep", nap.encode()]:
                found.append(int(entry.name))
    return found


def _rss_bytes() -> int:
    # The test server runs in this process (on both backends), so its memory is ours.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _exec_retrying(api: httpx.Client, command: str) -> httpx.Response:
    """An exec that may meet a channel the previous call broke: 503 once, then it reconnects."""
    for _ in range(5):
        response = exec_json(api, command)
        if response.status_code != 503:
            return response
        time.sleep(float(response.headers.get("retry-after", "1")))
    return response


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_no_process_outlives_its_call(hostile: LiveServer, namespace: str, escape: str) -> None:
    nap = _nap()
    with client(hostile, namespace) as trove:
        started = trove.exec_detailed(
            f"{ESCAPES[escape].format(nap=nap)}\n{RUNNING.format(nap=nap)}; echo started"
        )
        assert (started.exit_code, started.stdout) == (0, "started\n"), started
        after = trove.exec_detailed(COUNT.format(nap=nap))
        assert after.stdout.strip() == "0", after
    assert _host_sleepers(nap) == []


def test_a_command_that_kills_what_runs_it_still_leaves_nothing(hostile: LiveServer, namespace: str) -> None:
    # $PPID is whatever runs the command (the agent's supervisor of this call, or bubblewrap):
    # the same uid may kill it; its orphans must die all the same.
    nap = _nap()
    escape = ESCAPES["setsid_without_marker"].format(nap=nap)
    with raw_client(hostile, namespace) as api:
        killed = exec_json(api, f"{escape}\n{RUNNING.format(nap=nap)}; kill -9 $PPID; sleep 1")
        assert killed.status_code in (200, 408, 503), killed.text
        after = _exec_retrying(api, COUNT.format(nap=nap))
        assert after.status_code == 200, after.text
        assert after.json()["stdout"].strip() == "0"
    deadline = time.monotonic() + 10
    while _host_sleepers(nap) and time.monotonic() < deadline:  # a bound for a loaded host, not a speed check
        time.sleep(0.05)
    assert _host_sleepers(nap) == []


# A header announcing 4 GiB, written to every descriptor a command can open.
FORGE = r"""
forged='\377\377\377\377\000\000\000\001\005'
for f in /proc/$PPID/fd/* /proc/[0-9]*/fd/* /proc/self/fd/* /dev/stdout /dev/stderr; do
  timeout 0.2 sh -c 'printf "$1" >> "$2"' forge "$forged" "$f" 2>/dev/null
done
echo forged >&2
"""


def test_forged_frames_on_every_reachable_fd_do_not_reach_the_api(
    hostile: LiveServer, namespace: str
) -> None:
    rss = _rss_bytes()
    with raw_client(hostile, namespace) as api:
        for _ in range(3):
            forged = exec_json(api, FORGE)
            # Whatever the command managed, the API answers it (a dropped channel would be 503).
            assert forged.status_code in (200, 408), forged.text
            after = _exec_retrying(api, "echo alive")
            assert after.status_code == 200, after.text
            assert after.json()["stdout"] == "alive\n"
    assert _rss_bytes() - rss < 256 * MIB


PLANT = r"""
marker=/workspace/pth-marker-{token}
line="import os; open(os.environ.get('PTH_MARKER', '$marker'), 'w').close()"
home_of_uid=$(getent passwd "$(id -u)" 2>/dev/null | cut -d: -f6)
for home in "$HOME" /workspace /tmp "$home_of_uid"; do
  [ -n "$home" ] || continue
  for minor in 6 7 8 9 10 11 12 13 14 15; do
    site="$home/.local/lib/python3.$minor/site-packages"
    mkdir -p "$site" 2>/dev/null || continue
    echo "$line" > "$site/zz-trove-hostile.pth"
    echo "$line" > "$site/usercustomize.py"
  done
  echo "$line" > "$home/sitecustomize.py" 2>/dev/null
done
# The plant works on an interpreter that does read the user's site-packages.
if command -v python3 >/dev/null; then
  PTH_MARKER=/tmp/pth-control-{token} python3 -c pass 2>/dev/null
  [ -e /tmp/pth-control-{token} ] && echo planted
else
  echo planted
fi
"""

# Kill the agent that runs this command, if one does: every ancestor running agent.py (the
# supervisor of this call is a fork of it), all at once. ``[.]``: this text does not match itself.
KILL_AGENT = r"""
p=$$; found=
while [ "${p:-1}" -gt 1 ]; do
  if tr '\0' ' ' < /proc/$p/cmdline | grep -q 'agent[.]py'; then found="$found $p"; fi
  p=$(sed 's/.*) . \([0-9]*\) .*/\1/' /proc/$p/stat)
done
[ -z "$found" ] || kill -9 $found
echo no-agent-above
"""


def test_a_planted_pth_file_never_runs_in_the_agent(hostile: LiveServer, namespace: str) -> None:
    token = secrets.token_hex(6)
    with raw_client(hostile, namespace) as api:
        planted = exec_json(api, PLANT.replace("{token}", token))
        assert planted.status_code == 200, planted.text
        assert planted.json()["stdout"] == "planted\n", planted.json()
        # The agent restarts: killed here (its call answers 503 and the next one starts a new
        # agent), or, where commands do not run under a long-lived agent, nothing to restart.
        killed = exec_json(api, KILL_AGENT)
        assert killed.status_code in (200, 503), killed.text
        after = _exec_retrying(api, f"ls -A /workspace | grep -c 'pth-marker-{token}' || true")
        assert after.status_code == 200, after.text
        assert after.json()["stdout"].strip() == "0"
        # Files still move through the (new) agent, and it never ran the plant.
        with client(hostile, namespace) as trove:
            trove.write("still-works.txt", "yes")
            assert trove.read_text("still-works.txt") == "yes"
            assert trove.exec(f"ls -A /workspace | grep -c 'pth-marker-{token}' || true").strip() == "0"
