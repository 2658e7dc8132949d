"""What a sandbox can reach on the network: the internet through slirp4netns, nothing of the host.

Every probe runs inside a real sandbox of a live server. No probe sends a packet off this
machine: the probe script first checks that it is not in the host's network namespace (on a
server that shares it, the test fails there, before any remote address is tried), and every
remote address below lies in a range the sandbox's own routing table refuses (EACCES from a
``prohibit`` route), which the test asserts. Outbound internet itself cannot be tested here; the
slirp path is proven instead by a port forward from host loopback into the sandbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hostile.helpers import LIMITS, raw_client
from tests.support.server import LiveServer, start_server

# Remote targets: all inside ranges the sandbox's routes refuse, so nothing leaves the machine.
_BLOCKED_REMOTE = ["169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1"]

_PROBE = r"""
import errno, json, os, socket, sys
host_netns, targets = sys.argv[1], json.loads(sys.argv[2])
if os.readlink("/proc/self/ns/net") == host_netns:
    print(json.dumps({"host_netns": True}))
    sys.exit(0)
result = {"host_netns": False, "interfaces": [name for _, name in socket.if_nameindex()]}
for host, port in targets:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
        result[f"{host}:{port}"] = "connected"
    except OSError as exc:
        result[f"{host}:{port}"] = errno.errorcode.get(exc.errno or 0, str(exc))
    finally:
        s.close()
for name in sys.argv[3:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + name)
        result["abstract"] = "connected"
    except OSError as exc:
        result["abstract"] = errno.errorcode.get(exc.errno or 0, str(exc))
print(json.dumps(result))
"""


def _probe(http: httpx.Client, targets: list[tuple[str, int]], abstract: str = "") -> dict[str, object]:
    assert http.post("/write", json={"path": "probe.py", "content": _PROBE}).status_code == 200
    args = [os.readlink("/proc/self/ns/net"), json.dumps(targets), abstract]
    command = "python3 /workspace/probe.py " + " ".join(shlex.quote(a) for a in args if a)
    body = _run(http, command)
    assert body["exit_code"] == 0, body
    result: dict[str, object] = json.loads(str(body["stdout"]))
    return result


def _run(http: httpx.Client, command: str) -> dict[str, object]:
    response = http.post("/v1/exec", json={"command": command})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _host_addresses(family: str = "-4") -> list[str]:
    """This machine's own addresses other than loopback (and IPv6 link-local, which needs a scope)."""
    out = subprocess.run(["ip", family, "-o", "addr", "show"], capture_output=True, text=True, check=True)
    found = {line.split()[3].split("/")[0] for line in out.stdout.splitlines()}
    return sorted(a for a in found if not a.startswith(("127.", "::1", "fe80:")))


@contextlib.contextmanager
def _tcp_listener() -> Iterator[int]:
    """A listener on every host address (0.0.0.0), accepting in the background."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


@contextlib.contextmanager
def _abstract_listener() -> Iterator[str]:
    name = "trove-hostile-" + secrets.token_hex(6)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen(4)
    try:
        yield name
    finally:
        server.close()


def _slirp_api(path: Path, request: dict[str, object]) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
        control.connect(str(path))
        control.sendall(json.dumps(request).encode())
        control.shutdown(socket.SHUT_WR)
        answer: dict[str, object] = json.loads(control.recv(65536) or b"{}")
    return answer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def roomy() -> Iterator[LiveServer]:
    """A server whose execs may wait long enough for a connection from the host."""
    with start_server(**{**LIMITS, "exec_timeout_s": 30}, sandbox_uid_base=900_000) as live:
        yield live


def test_sandbox_reaches_no_host_service(api: httpx.Client, hostile: LiveServer) -> None:
    api_port = int(hostile.base_url.rsplit(":", 1)[1])
    with _tcp_listener() as port, _abstract_listener() as abstract:
        local = [("127.0.0.1", api_port), ("127.0.0.1", port), ("::1", api_port), ("::ffff:127.0.0.1", port)]
        refused = [("10.0.2.2", api_port), ("10.0.2.2", port)]  # slirp's gateway: host loopback
        refused += [(address, p) for address in _host_addresses() for p in (api_port, port)]
        refused += [(address, 80) for address in _BLOCKED_REMOTE]
        refused.append(("::ffff:169.254.169.254", 80))  # IPv4-mapped: routed as IPv4
        # No IPv6 route leaves the sandbox at all: the host's own IPv6 addresses, ULA and the
        # NAT64 prefix get "network unreachable".
        no_route = [(address, p) for address in _host_addresses("-6") for p in (api_port, port)]
        no_route += [("fd00::1", 80), ("64:ff9b::a9fe:a9fe", 80)]
        result = _probe(api, local + refused + no_route, abstract)
    assert result["host_netns"] is False, "the sandbox shares the host's network namespace"
    for host, p in local:  # the sandbox's own loopback: nobody listens there
        assert result[f"{host}:{p}"] == "ECONNREFUSED", (host, result)
    for host, p in refused:  # refused by the sandbox's routes: no packet left it
        assert result[f"{host}:{p}"] == "EACCES", (host, result)
    for host, p in no_route:
        assert result[f"{host}:{p}"] == "ENETUNREACH", (host, result)
    assert result["abstract"] == "ECONNREFUSED", result  # the host's abstract sockets are not there


def test_sandbox_cannot_change_its_routes(api: httpx.Client) -> None:
    body = _run(
        api,
        "ip route del prohibit 169.254.0.0/16; echo rc=$?; ip addr add 10.9.9.9/32 dev lo; echo rc=$?;"
        " ip route | grep -c prohibit",
    )
    out = str(body["stdout"])
    assert "rc=0" not in out, body
    assert int(out.split()[-1]) >= 5, body


def test_slirp_carries_traffic_into_the_sandbox(roomy: LiveServer, namespace: str) -> None:
    """The data path through slirp4netns works: a host-loopback port forward reaches a listener
    in the sandbox (the reverse of outbound traffic, over the same tap device and NAT). Outbound
    to the internet is the one thing not proven here: this machine has no internet to reach."""
    networks = roomy.ctx.runtime.networks  # type: ignore[attr-defined]
    key = f"{roomy.workspace_id}.{namespace}"
    message = "hello-" + secrets.token_hex(6)
    listener = (
        "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        "s.bind(('0.0.0.0', 8123)); s.listen(1); s.settimeout(25); "
        f"c, _ = s.accept(); c.sendall(b'{message}'); c.close()"
    )
    with raw_client(roomy, namespace) as http:
        setup = _run(http, "ip -4 -o addr show tap0; ip route show default")
        assert "10.0.2.100/24" in str(setup["stdout"]), setup
        assert "default via 10.0.2.2 dev tap0" in str(setup["stdout"]), setup
        # Forwarded connections arrive from slirp's gateway, which the sandbox's routes refuse
        # (its replies could not leave). Let replies to the gateway out, for this test only.
        netns_path = networks.acquire(key)
        networks.release(key)
        subprocess.run(
            ["nsenter", f"--net={netns_path}", "ip", "route", "add", "10.0.2.2/32", "dev", "tap0"], check=True
        )
        host_port = _free_port()
        answer = _slirp_api(
            networks.api_socket(key),
            {
                "execute": "add_hostfwd",
                "arguments": {
                    "proto": "tcp",
                    "host_addr": "127.0.0.1",
                    "host_port": host_port,
                    "guest_port": 8123,
                },
            },
        )
        assert "error" not in answer, answer
        outcome: dict[str, object] = {}
        worker = threading.Thread(
            target=lambda: outcome.update(_run(http, f"python3 -c {shlex.quote(listener)}"))
        )
        worker.start()
        received = b""
        while worker.is_alive() and not received:
            # slirp accepts on the host side, then drops the connection until the guest listens.
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", host_port), timeout=5) as conn,
            ):
                received = conn.recv(100)
            if not received:
                time.sleep(0.05)
        worker.join()
    assert received == message.encode(), outcome
    assert outcome["exit_code"] == 0, outcome


def test_a_dead_slirp_never_hangs_an_exec(roomy: LiveServer, namespace: str) -> None:
    networks = roomy.ctx.runtime.networks  # type: ignore[attr-defined]
    key = f"{roomy.workspace_id}.{namespace}"
    with raw_client(roomy, namespace) as http:
        assert _run(http, "true")["exit_code"] == 0
        first = networks.slirp_pid(key)
        assert first is not None
        os.kill(first, 9)
        while Path(f"/proc/{first}").exists() and networks.slirp_pid(key) == first:
            # Reaped by the next exec's check; until then it is a zombie of this process.
            if Path(f"/proc/{first}/stat").read_text().split(")")[1].split()[0] == "Z":
                break
            time.sleep(0.01)
        body = _run(http, "python3 -c 'import socket; print([n for _, n in socket.if_nameindex()])'")
        assert body["exit_code"] == 0, body
        assert "tap0" in str(body["stdout"]), body  # rebuilt, not left without network
        assert networks.slirp_pid(key) not in (None, first)


def test_network_off_leaves_only_loopback(namespace: str) -> None:
    with start_server(**LIMITS, sandbox_network="off", sandbox_uid_base=910_000) as off:
        assert off.ctx.runtime.networks is None  # type: ignore[attr-defined]
        with raw_client(off, namespace) as http:
            result = _probe(http, [("127.0.0.1", int(off.base_url.rsplit(":", 1)[1]))])
    assert result["interfaces"] == ["lo"], result
    assert result["127.0.0.1:" + off.base_url.rsplit(":", 1)[1]] == "ECONNREFUSED", result


def test_old_setting_on_means_outbound(namespace: str) -> None:
    with start_server(**LIMITS, sandbox_network="on", sandbox_uid_base=920_000) as server:
        assert server.settings.sandbox_network == "outbound"
        with raw_client(server, namespace) as http:
            result = _probe(http, [("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]))])
    assert result["host_netns"] is False, result
    assert result["interfaces"] == ["lo", "tap0"], result


_NON_ROOT_SERVER = """
import asyncio, sys
from pathlib import Path
from trove_api.runtimes.local.runtime import LocalRuntime
from trove_api.runtimes.local.sandbox import Limits
from trove_core.runtime import ExecSpec, NamespaceRef

async def main():
    runtime = LocalRuntime(
        Path(sys.argv[1]), sandbox=True, network="outbound", uid_base=200000,
        limits=Limits(60, 10**8, 256, None), memory_bytes=2**30,
    )
    for warning in runtime.startup_report():
        print("WARNING", warning)
    ns = NamespaceRef("ws", "a")
    await runtime.provision(ns)
    script = "python3 -c 'import socket; print([n for _, n in socket.if_nameindex()])'"
    out = await runtime.exec(ns, ExecSpec(script, None, 10, 10000))
    print("INTERFACES", out.stdout.decode().strip())

asyncio.run(main())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to an unprivileged uid")
def test_non_root_server_degrades_to_no_network_loudly() -> None:
    """Without root no network namespace can be prepared: sandboxes get none, never the host's."""
    # pytest's tmp_path sits under a 0700 directory the unprivileged uid cannot enter.
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:
        os.chmod(scratch, 0o777)
        script = Path(scratch) / "server.py"
        script.write_text(_NON_ROOT_SERVER)
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, str(script)]
        result = subprocess.run(
            [*argv, f"{scratch}/data"], capture_output=True, text=True, timeout=120, check=False
        )
    assert result.returncode == 0, result.stderr
    assert "sandboxes get NO network" in result.stdout, result.stdout
    assert "INTERFACES ['lo']" in result.stdout, result.stdout


def test_configured_private_ranges_are_routed_out_and_nothing_else(namespace: str) -> None:
    """TROVE_SANDBOX_NETWORK_ALLOW opens a private range through slirp; the rest stays refused.
    Routes are only looked up (``ip route get``), no packet is sent."""
    host = _host_addresses()[0]
    allow = f"192.168.77.0/24,{host}/32,169.254.169.254/32"
    with start_server(**LIMITS, sandbox_network_allow=allow, sandbox_uid_base=930_000) as server:
        with raw_client(server, namespace) as http:
            lookups = {
                target: _run(http, f"ip -4 route get {target} 2>&1")
                for target in (
                    "192.168.77.5",
                    "169.254.169.254",
                    "192.168.1.1",
                    "169.254.1.1",
                    host,
                    "10.0.2.2",
                )
            }
    routed = {target: "via 10.0.2.2 dev tap0" in str(body["stdout"]) for target, body in lookups.items()}
    assert routed == {
        "192.168.77.5": True,
        "169.254.169.254": True,
        "192.168.1.1": False,
        "169.254.1.1": False,
        host: False,  # the host's own addresses can not be opened
        "10.0.2.2": False,
    }, lookups
