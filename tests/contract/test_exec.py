"""POST /v1/exec through the official client: output, exit codes, chains, stdin, init.sh, timeouts."""

from __future__ import annotations

import httpx
import pytest
from trove_sdk import TroveClient, TroveError, TroveExecError, TroveTimeoutError

from tests.support.sdk import client
from tests.support.server import LiveServer

MIB = 1024 * 1024


def test_exec_returns_stdout(trove: TroveClient) -> None:
    assert trove.exec("echo hi") == "hi\n"


def test_exec_detailed_reports_nonzero_exit_without_raising(trove: TroveClient) -> None:
    result = trove.exec_detailed("echo out; echo err >&2; exit 3")
    assert result.exit_code == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert isinstance(result.duration_ms, int)
    assert result.duration_ms >= 0


def test_exec_raises_exec_error_with_captured_streams(trove: TroveClient) -> None:
    with pytest.raises(TroveExecError) as caught:
        trove.exec("echo partial; echo 'it broke' >&2; false")
    err = caught.value
    assert err.exit_code == 1
    assert err.status_code is None
    assert err.stdout == "partial\n"
    assert err.stderr == "it broke\n"
    assert "it broke" in str(err)


def test_exec_chain_keeps_cwd_and_variables(trove: TroveClient) -> None:
    result = trove.exec_chain(["cd workspace", "X=1", "echo $X $PWD"])
    assert result.exit_code == 0
    value, cwd = result.stdout.split()
    assert value == "1"
    assert cwd.endswith("workspace")


def test_exec_chain_short_circuits_on_first_failure(trove: TroveClient) -> None:
    result = trove.exec_chain(["echo one", "false", "echo never"])
    assert result.exit_code == 1
    assert result.stdout == "one\n"


def test_each_exec_gets_a_fresh_shell(trove: TroveClient) -> None:
    trove.exec("cd workspace && export LEAK=1")
    out = trove.exec('echo "${LEAK:-unset}"; pwd')
    leaked, cwd = out.split()
    assert leaked == "unset"
    assert not cwd.endswith("workspace")


def test_files_persist_between_execs(trove: TroveClient) -> None:
    trove.exec("mkdir -p workspace/data && echo kept > workspace/data/f.txt")
    assert trove.exec("cat workspace/data/f.txt") == "kept\n"
    assert trove.read_text("workspace/data/f.txt") == "kept\n"


def test_stdin_is_piped_to_the_command(trove: TroveClient) -> None:
    assert trove.exec("wc -c", stdin="hello").strip() == "5"
    assert trove.exec("cat", stdin="héllo\n") == "héllo\n"


def test_no_stdin_means_dev_null(trove: TroveClient) -> None:
    # Without stdin the command must see EOF at once (not hang on an open pipe).
    assert trove.exec("cat") == ""


def test_stdin_of_exactly_one_mib_is_accepted(trove: TroveClient) -> None:
    assert trove.exec("wc -c", stdin="x" * MIB).strip() == str(MIB)


def test_stdin_over_one_mib_is_422_with_string_detail(trove: TroveClient) -> None:
    with pytest.raises(TroveError) as caught:
        trove.exec("wc -c", stdin="x" * (MIB + 1))
    assert caught.value.status_code == 422
    assert isinstance(caught.value.args[0], str)
    assert "stdin" in caught.value.args[0]


def test_init_sh_is_sourced_before_every_command(trove: TroveClient) -> None:
    trove.write("workspace/a/keep.txt", "x")
    trove.set_init("cd workspace/a\nexport Z=9\n")
    cwd, z = trove.exec("pwd; echo $Z").split()
    assert cwd.endswith("workspace/a")
    assert z == "9"
    # Functions defined by the prelude carry over too; the prelude re-runs on each call.
    trove.set_init("greet() { echo hello $1; }\n")
    assert trove.exec("greet you") == "hello you\n"


def test_init_sh_errors_do_not_block_the_command(trove: TroveClient) -> None:
    trove.set_init("cd workspace/does-not-exist\nexport AFTER=yes\n")
    result = trove.exec_detailed("echo ran $AFTER")
    assert result.exit_code == 0
    assert result.stdout == "ran yes\n"
    assert result.stderr != ""


def test_init_sh_syntax_error_does_not_block_the_command(trove: TroveClient) -> None:
    trove.set_init("if then fi (\n")
    result = trove.exec_detailed("echo still-runs")
    assert result.exit_code == 0
    assert result.stdout == "still-runs\n"


def test_clearing_init_sh_stops_the_prelude(trove: TroveClient) -> None:
    trove.set_init("export P=set\n")
    assert trove.exec("echo ${P:-none}") == "set\n"
    assert trove.clear_init() is True
    assert trove.exec("echo ${P:-none}") == "none\n"


def test_exec_in_one_namespace_cannot_see_another(server: LiveServer, namespace: str) -> None:
    with client(server, namespace) as one, client(server, namespace + "-b") as two:
        one.write("workspace/secret.txt", "mine")
        assert two.exec_detailed("cat workspace/secret.txt").exit_code != 0
        assert two.exec("ls -A workspace/") == ""


def test_timeout_is_408_timeout_error(timeout_server: LiveServer, namespace: str) -> None:
    with client(timeout_server, namespace) as trove:
        with pytest.raises(TroveTimeoutError) as caught:
            trove.exec("sleep 30")
        assert caught.value.status_code == 408
        assert "timed out" in str(caught.value)
        # The namespace stays usable after a killed command.
        assert trove.exec("echo alive") == "alive\n"


def test_timeout_kills_background_processes_of_the_command(
    timeout_server: LiveServer, namespace: str
) -> None:
    with client(timeout_server, namespace) as trove:
        with pytest.raises(TroveTimeoutError):
            trove.exec("(sleep 4; echo late > workspace/late.txt) & sleep 30")
        # Give a surviving child ample time to write, then check it never did.
        trove.exec("sleep 1.8 || true")
        trove.exec("sleep 1.8 || true")
        assert trove.exec("ls -A workspace/") == ""


def test_legacy_exec_times_out_with_408(timeout_server: LiveServer, namespace: str) -> None:
    response = httpx.post(
        f"{timeout_server.base_url}/exec",
        json={"command": "sleep 30"},
        headers={"Authorization": f"Bearer {timeout_server.workspace_key}", "X-Namespace": namespace},
        timeout=60,
    )
    assert response.status_code == 408
    assert isinstance(response.json()["detail"], str)


def test_empty_stdin_is_empty_input(trove: TroveClient) -> None:
    assert trove.exec("wc -c", stdin="") == "0\n"


def test_stdin_the_command_never_reads_is_harmless(trove: TroveClient) -> None:
    assert trove.exec_detailed("true", stdin="x" * MIB).exit_code == 0
    assert trove.exec("head -c 3", stdin="x" * MIB) == "xxx"


def test_exit_codes_pass_through(trove: TroveClient) -> None:
    assert trove.exec_detailed("exit 255").exit_code == 255
    assert trove.exec_detailed("kill -9 $$").exit_code == 137


def test_a_background_process_does_not_hold_the_call_open(trove: TroveClient) -> None:
    # "Background processes" do not persist between calls; the call returns with the shell.
    result = trove.exec_detailed("sleep 100 & echo started")
    assert (result.exit_code, result.stdout) == (0, "started\n")


def test_exit_in_init_sh_ends_the_shell_before_the_command(trove: TroveClient) -> None:
    # Documented pitfall: "Avoid exit statements in the script".
    trove.set_init("exit 3\n")
    result = trove.exec_detailed("echo never")
    assert (result.exit_code, result.stdout) == (3, "")
