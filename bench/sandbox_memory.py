"""Memory of warm local sandboxes: PSS per sandbox with 100 warm, and the API's RSS per open channel.

100 namespaces are each used once (one exec); then every process below the server is found by
parentage (bubblewrap, the agent and its idle supervisor, the network helper, any spawn-chain
link that stays) and its PSS summed from /proc/PID/smaps_rollup. PSS splits shared pages between
the processes sharing them, so that sum divided by the number of sandboxes (pid namespaces other
than the host's) is what one more warm sandbox costs the machine. The sandboxes are the 100, the
warm-up namespace's, and the spares the runtime starts ahead for the next new namespaces: each
is a warm sandbox, and a namespace's first call may claim a spare started before the 100, so
only counting the processes that appeared during them missed sandboxes and failed the run.
Network helpers started ahead without a sandbox yet are in the sum, not in the count. The
baseline is one bare sandbox of the same chain running `sleep` instead of the agent.

Then each of the 100 runs one command through the e2b SDK (a process start, not an exec): from
then on its agent keeps a zygote, a fork of itself waiting for the next start. The second
figure is the PSS per sandbox after that, and the difference is what a sandbox that has run an
E2B command costs more (the zygote, and whatever the start left in the agent).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from e2b import Sandbox
from trove_sdk import TroveClient

from bench.common import Result, ServerProcess, header, launch_server, proc_status_kb
from bench.e2b_sdk import use_server
from bench.proctree import (
    TreeMemory,
    descendants,
    ppid_table,
    pss_of,
    sandboxes_below,
)
from bench.sandbox import raw_sandbox

NAME = "sandbox_memory"
WARM = 100
TARGET_PSS_MB = 16.0
TARGET_CHANNEL_MB = 0.5
# Room for the warm-up namespace: none of the 100 may be stopped as least recently used.
SERVER_ENV = {"TROVE_SANDBOX_MAX_WARM": str(WARM + 10)}
_KB_PER_MB = 1024
_SETTLE_S = 1.0


def _bare_sandbox(server: ServerProcess, namespace: str) -> TreeMemory:
    """PSS of one `bwrap … bash -c 'sleep'` sandbox (every process of its chain)."""
    raw = raw_sandbox(server, namespace, "sleep 60")
    process = subprocess.Popen(
        raw.argv,
        env=raw.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        memory = TreeMemory()
        for _ in range(200):  # until `sleep` runs inside it
            time.sleep(0.05)
            tree = {process.pid} | descendants(ppid_table(), process.pid)
            memory = pss_of(tree)
            if "sleep" in memory.names:
                break
        return memory
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run(server: ServerProcess, warm: int = WARM) -> Result:
    header(f"memory of warm sandboxes: PSS with {warm} namespaces used once each; API RSS per channel")
    with TroveClient(server.workspace_key, "mem-warmup", base_url=server.base_url) as client:
        client.exec("true")  # imports, pools and caches of the first call: not a channel's cost
    time.sleep(_SETTLE_S)
    # Before the 100: with them running, shared pages would make the bare one look smaller.
    bare = _bare_sandbox(server, "mem-warmup")
    rss_before_kb = proc_status_kb(server.pid, "VmRSS")
    for i in range(warm):
        with TroveClient(server.workspace_key, f"mem-{i}", base_url=server.base_url) as client:
            client.exec("true")
    time.sleep(_SETTLE_S)  # a spawn-per-exec runtime's sandboxes are gone by now
    rss_after_kb = proc_status_kb(server.pid, "VmRSS")
    sandboxes, found = sandboxes_below(server.pid)
    per_channel_mb = (rss_after_kb - rss_before_kb) / warm / _KB_PER_MB
    bare_mb = bare.pss_kb / _KB_PER_MB
    per_sandbox_mb = sandboxes.pss_kb / found / _KB_PER_MB if found else 0.0
    # What each kind of process costs per sandbox (its PSS over all of them, per sandbox).
    by_kind_kb = {kind: round(kb / found) for kind, kb in sandboxes.pss_kb_by_kind.items()} if found else {}
    details = {
        "warm_namespaces": warm,
        "sandboxes_found": found,
        "sandbox_processes": len(sandboxes.pids),
        "sandbox_process_names": sandboxes.names,
        "sandbox_processes_by_kind": sandboxes.processes_by_kind,
        "pss_per_sandbox_kb_by_kind": by_kind_kb,
        "unreadable_pids": len(sandboxes.unreadable),
        "pss_total_kb": sandboxes.pss_kb,
        "pss_per_sandbox_mb": round(per_sandbox_mb, 2),
        "api_rss_before_kb": rss_before_kb,
        "api_rss_after_kb": rss_after_kb,
        "api_rss_per_channel_mb": round(per_channel_mb, 3),
        "bare_sandbox_pss_kb": bare.pss_kb,
        "bare_sandbox_processes": bare.names,
    }
    if found:
        figure = (
            f"PSS {per_sandbox_mb:.1f} MB per warm sandbox ({found} found, {len(sandboxes.pids)} processes), "
            f"API RSS +{per_channel_mb:.2f} MB per channel"
        )
        ratio_text = f"{per_sandbox_mb / bare_mb:.2f}x a bare sandbox" if bare_mb else "n/a"
        passed = found >= warm and per_sandbox_mb <= TARGET_PSS_MB and per_channel_mb <= TARGET_CHANNEL_MB
    else:
        # E.g. a runtime that spawns a sandbox per exec: only helpers (if any) stay behind.
        figure = (
            f"no warm sandboxes found ({warm} namespaces used; left below the server: "
            f"{sandboxes.names or 'nothing'}, PSS {sandboxes.pss_kb / _KB_PER_MB:.1f} MB in all); "
            f"API RSS +{per_channel_mb:.2f} MB per namespace"
        )
        ratio_text = "n/a"
        passed = False
    after_e2b = _after_an_e2b_command_each(server, warm, by_kind_kb)
    details |= after_e2b
    if found and after_e2b["pss_per_sandbox_mb_after_e2b_command"]:
        figure += f"; {after_e2b['pss_per_sandbox_mb_after_e2b_command']:.1f} MB after an E2B command each"
    result = Result(
        name=NAME,
        figure=figure,
        baseline=f"bare bwrap sleep sandbox PSS {bare_mb:.1f} MB ({sum(bare.names.values())} processes)",
        ratio=ratio_text,
        target=f"<= {TARGET_PSS_MB:g} MB PSS each, API <= {TARGET_CHANNEL_MB:g} MB per channel",
        passed=passed,
        details=details,
    )
    result.show()
    print(f"  (processes found: {sandboxes.names or 'none'}; unreadable: {len(sandboxes.unreadable)})")
    for kind, kb in sorted(by_kind_kb.items(), key=lambda item: -item[1]):
        print(f"    {kind}: {kb} kB per sandbox ({sandboxes.processes_by_kind[kind]} processes)")
    return result


def _after_an_e2b_command_each(
    server: ServerProcess, warm: int, before_kb: dict[str, int]
) -> dict[str, object]:
    """PSS per sandbox once each namespace has run one E2B command (so keeps an idle zygote)."""
    use_server(server)
    for i in range(warm):
        result = Sandbox.connect(f"mem-{i}").commands.run("true")
        assert result.exit_code == 0, result
    time.sleep(_SETTLE_S)
    sandboxes, found = sandboxes_below(server.pid)
    if not found:
        return {"pss_per_sandbox_mb_after_e2b_command": 0.0}
    by_kind_kb = {kind: round(kb / found) for kind, kb in sandboxes.pss_kb_by_kind.items()}
    grown = {
        kind: kb - before_kb.get(kind, 0) for kind, kb in by_kind_kb.items() if kb != before_kb.get(kind, 0)
    }
    per_sandbox_mb = sandboxes.pss_kb / found / _KB_PER_MB
    print(f"  after one E2B command in each ({found} sandboxes): PSS {per_sandbox_mb:.1f} MB per sandbox")
    for kind, kb in sorted(grown.items(), key=lambda item: -abs(item[1])):
        print(
            f"    {kind}: {kb:+d} kB per sandbox ({sandboxes.processes_by_kind.get(kind, 0)} processes now)"
        )
    return {
        "pss_per_sandbox_mb_after_e2b_command": round(per_sandbox_mb, 2),
        "pss_per_sandbox_kb_by_kind_after_e2b_command": by_kind_kb,
        "sandbox_processes_by_kind_after_e2b_command": sandboxes.processes_by_kind,
        "pss_per_sandbox_kb_grown_by_kind": grown,
    }


def main() -> None:
    with launch_server(env=SERVER_ENV) as server:
        run(server).save()


if __name__ == "__main__":
    main()
