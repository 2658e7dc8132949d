"""The local runtime's command-line builders: what the sandbox can see, and the order of the chain."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from trove_api.runtimes.channel import AGENT_SOURCE
from trove_api.runtimes.local.launch import SandboxLauncher, compile_agent
from trove_api.runtimes.local.sandbox import (
    SANDBOX_PATH,
    SANDBOX_ROOT,
    Limits,
    build_bwrap_argv,
    build_drop_privileges,
    build_enter_netns,
    build_limits_wrapper,
    build_shell,
)

NS_ROOT = "/srv/trove/namespaces/ws-1/agent"
SYSTEM_DIRS = {"/usr", "/etc"}
_BIND_OPTS = {"--bind", "--ro-bind", "--dev-bind", "--bind-try", "--ro-bind-try", "--dev-bind-try"}


def _binds(argv: list[str]) -> list[tuple[str, str, str]]:
    """(option, host source, sandbox destination) for every bind in a bwrap argv."""
    found = []
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg in _BIND_OPTS:
            found.append((arg, argv[i + 1], argv[i + 2]))
    return found


@pytest.mark.parametrize("own_netns", [True, False])
def test_only_the_namespace_and_read_only_system_dirs_are_bound(own_netns: bool) -> None:
    argv = build_bwrap_argv(NS_ROOT, own_netns=own_netns, seccomp_fd=3)
    binds = _binds(argv)
    writable = [(src, dst) for opt, src, dst in binds if opt != "--ro-bind"]
    assert writable == [(NS_ROOT, SANDBOX_ROOT)]
    for opt, src, dst in binds:
        if opt == "--ro-bind":
            assert src in SYSTEM_DIRS
            assert dst == src
    assert not any(opt.startswith("--dev-bind") for opt, _, _ in binds)


def test_namespaces_are_unshared_and_children_die_with_the_sandbox() -> None:
    argv = build_bwrap_argv(NS_ROOT, own_netns=False)
    assert argv[0] == "bwrap"
    for flag in (
        "--unshare-user", "--disable-userns", "--unshare-ipc", "--unshare-pid", "--unshare-uts",
        "--unshare-cgroup-try", "--unshare-net", "--die-with-parent", "--new-session", "--clearenv",
    ):  # fmt: skip
        assert flag in argv
    assert argv[-1] == "--"
    assert argv[argv.index("--proc") + 1] == "/proc"
    assert argv[argv.index("--tmpfs") + 1] == "/tmp"
    assert argv[argv.index("--chdir") + 1] == "/"


def test_network_namespace_choice_is_honoured() -> None:
    # In a prepared network namespace bwrap stays in it; otherwise it makes an empty one.
    assert "--unshare-net" not in build_bwrap_argv(NS_ROOT, own_netns=True)
    assert "--unshare-net" in build_bwrap_argv(NS_ROOT, own_netns=False)
    for own in (True, False):
        argv = build_bwrap_argv(NS_ROOT, own_netns=own)
        assert "--share-net" not in argv
        assert "--unshare-all" not in argv  # it would take the prepared network namespace away


def test_seccomp_fd_is_handed_to_bwrap() -> None:
    argv = build_bwrap_argv(NS_ROOT, own_netns=True, seccomp_fd=3)
    assert argv[argv.index("--seccomp") + 1] == "3"
    assert "--seccomp" not in build_bwrap_argv(NS_ROOT, own_netns=True)


def test_limits_wrapper_opens_inputs_per_exec(tmp_path: Path) -> None:
    data = tmp_path / "it's a filter"
    data.write_bytes(b"bpf")
    argv = build_limits_wrapper([], Limits(5, 1024 * 1024, 33, None), [(3, str(data))])
    result = subprocess.run([*argv, "/bin/sh", "-c", "cat <&3"], capture_output=True, check=True)
    assert result.stdout == b"bpf"


def test_enter_netns() -> None:
    assert build_enter_netns(None) == []
    assert build_enter_netns("/run/netns/x") == ["nsenter", "--net=/run/netns/x", "--"]


def test_environment_is_clean() -> None:
    argv = build_bwrap_argv(NS_ROOT, own_netns=True)
    env = {argv[i + 1]: argv[i + 2] for i, arg in enumerate(argv) if arg == "--setenv"}
    assert env["HOME"] == SANDBOX_ROOT
    assert set(env) == {"HOME", "PATH", "LANG", "TERM", "USER"}
    assert NS_ROOT not in " ".join(env.values())
    assert argv.index("--clearenv") < argv.index("--setenv")


def test_drop_privileges() -> None:
    assert build_drop_privileges(None) == []
    argv = build_drop_privileges(200_007)
    assert argv[0] == "setpriv"
    assert "--reuid=200007" in argv
    assert "--regid=200007" in argv
    assert "--clear-groups" in argv
    assert "--inh-caps=-all" in argv
    assert argv[-1] == "--"


def test_limits_wrapper_sets_the_limits() -> None:
    limits = Limits(
        cpu_seconds=7, file_bytes=1024 * 1024, processes=33, address_space_bytes=512 * 1024 * 1024
    )
    argv = [*build_limits_wrapper([], limits), "/bin/sh", "-c", "ulimit -t; ulimit -f; ulimit -p; ulimit -v"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["7", "2048", "33", str(512 * 1024)]


def test_limits_wrapper_refuses_to_run_when_a_step_fails() -> None:
    limits = Limits(cpu_seconds=7, file_bytes=1024, processes=33, address_space_bytes=None)
    argv = [*build_limits_wrapper(["/nonexistent/dir/cgroup.procs"], limits), "/bin/echo", "ran"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 125
    assert "ran" not in result.stdout


def test_limits_wrapper_quotes_cgroup_paths() -> None:
    argv = build_limits_wrapper(["/sys/fs/cgroup/x y;rm -rf/cgroup.procs"], Limits(1, 1024, 8, None))
    assert "'/sys/fs/cgroup/x y;rm -rf/cgroup.procs'" in argv[2]


def test_shell() -> None:
    assert build_shell("echo hi") == ["/bin/bash", "--noprofile", "--norc", "-c", "echo hi"]


def test_sandbox_chain_drops_privileges_before_bubblewrap() -> None:
    launcher = SandboxLauncher.__new__(SandboxLauncher)
    launcher.seccomp_path = Path("/srv/trove/seccomp.bpf")
    launcher.limits = Limits(cpu_seconds=None, file_bytes=None, processes=64, address_space_bytes=None)
    launcher.resolv_conf = Path("/srv/trove/resolv.conf")
    argv = launcher.argv(NS_ROOT, 200_003, ["/sys/fs/cgroup/pids/trove/k/cgroup.procs"], "/run/netns/trove-x")
    assert argv[:2] == ["/bin/sh", "-c"]  # limits and cgroups first, inherited by everything below
    assert "3</srv/trove/seccomp.bpf" in argv[2]  # opened as root, before the drop
    assert f"4<{AGENT_SOURCE}" in argv[2]  # the agent too: no sandbox uid needs to reach it
    # RLIMIT_CPU on the long-lived agent would add up over every call: each command gets its own.
    assert "ulimit -t" not in argv[2]
    assert "ulimit -f" not in argv[2]
    nsenter, setpriv = argv.index("nsenter"), argv.index("setpriv")
    bwrap, python = argv.index("bwrap"), argv.index("python3")
    assert nsenter < setpriv < bwrap < python  # entering the network namespace needs root
    assert argv[bwrap:].index("--seccomp") < argv[bwrap:].index("--")
    assert "--reuid=200003" in argv[setpriv:bwrap]
    assert argv[python:] == ["python3", "-I", "-S", "/run/trove/agent.py", SANDBOX_ROOT]
    data = argv.index("--ro-bind-data")
    assert argv[data + 1 : data + 3] == ["4", "/run/trove/agent.py"]
    # With a network of its own it resolves through slirp's forwarder, not the host's resolver.
    assert "5</srv/trove/resolv.conf" in argv[2]
    assert argv[data + 3 : data + 6] == ["--ro-bind-data", "5", "/etc/resolv.conf"]
    assert "--share-net" not in argv
    assert "--unshare-net" not in argv
    host_paths = [src for _, src, _ in _binds(argv[bwrap:])]
    assert set(host_paths) <= SYSTEM_DIRS | {NS_ROOT}


def test_the_sandbox_runs_the_agent_compiled_ahead(tmp_path: Path) -> None:
    # Compiling the agent's source on every start cost a new namespace's first call 20-40 ms.
    compiled = compile_agent(tmp_path / "agent.pyc")
    assert compiled == tmp_path / "agent.pyc"
    launcher = SandboxLauncher.__new__(SandboxLauncher)
    launcher.seccomp_path = None
    launcher.limits = Limits(cpu_seconds=None, file_bytes=None, processes=64, address_space_bytes=None)
    launcher.compiled = compiled
    argv = launcher.argv(NS_ROOT, 200_003, [], None)
    assert f"4<{compiled}" in argv[2]
    assert argv[-3:] == ["-S", "/run/trove/agent.pyc", SANDBOX_ROOT]
    data = argv.index("--ro-bind-data")
    assert argv[data + 1 : data + 3] == ["4", "/run/trove/agent.pyc"]
    # The bytecode runs under the interpreter the sandbox finds, and the agent says hello.
    (tmp_path / "root").mkdir()
    hello = subprocess.run(
        ["python3", "-I", "-S", str(compiled), str(tmp_path / "root")],
        input=b"",
        capture_output=True,
        env={"PATH": SANDBOX_PATH},
        timeout=60,
        check=True,
    )
    assert b'"version"' in hello.stdout
