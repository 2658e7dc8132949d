"""``update_network`` and ``allow_internet_access=False`` through the official e2b SDK.

Local backend: the rules are ``prohibit`` routes in the sandbox's own network namespace. No test
sends a packet off this machine: an allowed destination is only looked up (``ip route get``
shows the route through slirp's gateway), and a refused one fails ``connect`` with EACCES at
the sandbox's own routing table. The destinations are documentation ranges (TEST-NET-2/3),
outside every range Trove refuses on its own. Kubernetes: the rules land in the sandbox's
NetworkPolicy (which the test cluster does not enforce), so only the object is checked.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox
from e2b.exceptions import SandboxException

from tests.support.sdk import client
from tests.support.server import LiveServer, make_data_dir, start_server

KUBERNETES = os.environ.get("TROVE_TEST_BACKEND") == "kubernetes"
TARGET = "203.0.113.7"  # TEST-NET-3
OTHER = "198.51.100.7"  # TEST-NET-2
local_only = pytest.mark.skipif(KUBERNETES, reason="routes of a local sandbox's network namespace")

_CONNECT = (
    "import errno, socket, sys\n"
    "s = socket.socket()\n"
    "s.settimeout(3)\n"
    "try:\n"
    "    s.connect((sys.argv[1], 80))\n"
    "    print('connected')\n"
    "except OSError as exc:\n"
    "    print(errno.errorcode.get(exc.errno or 0, str(exc)))\n"
)


# A raw DNS query for example.com's A record to slirp's forwarder, the way a hostile command
# would tunnel data out in names it asks for (no resolver library, no /etc/resolv.conf).
_DNS_QUERY = (
    "import errno, socket, struct\n"
    "name = b'\\x07example\\x03com\\x00'\n"
    "query = struct.pack('>6H', 0x7472, 0x0100, 1, 0, 0, 0) + name + struct.pack('>2H', 1, 1)\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.settimeout(5)\n"
    "try:\n"
    "    s.sendto(query, ('10.0.2.3', 53))\n"
    "except OSError as exc:\n"
    "    raise SystemExit(print(errno.errorcode.get(exc.errno or 0, str(exc))))\n"
    "try:\n"
    "    answer = s.recv(512)\n"
    "    print('answered' if answer[:2] == query[:2] else 'garbled')\n"
    "except OSError:\n"
    "    print('sent')  # reached the forwarder; this machine has no upstream DNS for it\n"
)


def dns_query(sbx: Sandbox) -> str:
    """``EACCES`` when the sandbox's routing table refuses slirp's DNS forwarder, else
    ``answered`` (or ``sent`` where the forwarder has no upstream resolver to ask)."""
    sbx.files.write("dns_query.py", _DNS_QUERY)
    return sbx.commands.run("python3 dns_query.py").stdout.strip()


def resolves(sbx: Sandbox) -> bool:
    """Whether the sandbox's own resolver configuration (what getent, pip and curl use) answers."""
    return sbx.commands.run("getent hosts pypi.org >/dev/null; echo $?").stdout.strip() == "0"


def routed(sbx: Sandbox, address: str) -> bool:
    """Whether the sandbox's routing table sends ``address`` out through slirp (no packet sent)."""
    out = sbx.commands.run(f"ip -4 route get {address} 2>&1; true").stdout
    return "via 10.0.2.2 dev tap0" in out


def refused(sbx: Sandbox, address: str) -> bool:
    """A connect refused by a ``prohibit`` route: EACCES before any packet leaves."""
    if routed(sbx, address):
        return False  # never connect to a routed address: that packet would leave the machine
    sbx.files.write("connect.py", _CONNECT)
    return sbx.commands.run(f"python3 connect.py {address}").stdout.strip() == "EACCES"


@pytest.fixture
def sandbox(e2b_env: LiveServer) -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=300)
    try:
        yield sbx
    finally:
        sbx.kill()


@local_only
def test_deny_then_clear(sandbox: Sandbox) -> None:
    assert routed(sandbox, TARGET)
    sandbox.update_network({"deny_out": ["203.0.113.0/24"]})
    assert refused(sandbox, TARGET)
    assert routed(sandbox, OTHER)  # only what was denied
    info = sandbox.get_info()
    assert info.network is not None
    assert info.network.get("deny_out") == ["203.0.113.0/24"]
    # An update replaces the whole configuration: one without deny_out clears it.
    sandbox.update_network({})
    assert routed(sandbox, TARGET)
    assert sandbox.get_info().network in ({}, {"allow_out": [], "deny_out": []})


@local_only
def test_rules_naming_the_sandboxs_own_plumbing_never_break_its_network(sandbox: Sandbox) -> None:
    """slirp's /24 (gateway, DNS forwarder) and the default route stay Trove's: lifting such a
    rule leaves the sandbox with its way out."""
    sandbox.update_network({"deny_out": ["10.0.2.0/24", "10.0.2.3", "10.0.2.2", "0.0.0.0/0"]})
    assert refused(sandbox, TARGET)
    sandbox.update_network({})
    assert routed(sandbox, TARGET)
    assert "dev tap0" in sandbox.commands.run("ip -4 route get 10.0.2.3 2>&1; true").stdout


@local_only
def test_allow_out_wins_over_deny_out(sandbox: Sandbox) -> None:
    sandbox.update_network({"deny_out": ["0.0.0.0/0"], "allow_out": ["203.0.113.0/24"]})
    assert routed(sandbox, TARGET)
    assert refused(sandbox, OTHER)
    assert not sandbox.get_info().allow_internet_access


@local_only
def test_no_internet_access_from_the_first_command(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create(allow_internet_access=False)
    try:
        assert refused(sbx, TARGET)
        assert refused(sbx, OTHER)
        assert sbx.get_info().allow_internet_access is False
    finally:
        sbx.kill()


@local_only
def test_deny_all_cuts_dns_and_lifting_it_gives_dns_back(sandbox: Sandbox) -> None:
    """Hostile: slirp's DNS forwarder answers any name for the sandbox, so under deny-all a
    command could still send data out in the names it looks up. Deny-all cuts the forwarder too."""
    upstream = dns_query(sandbox)
    assert upstream in ("answered", "sent")
    # Its resolv.conf names the forwarder: tools resolve (where this machine has DNS at all).
    assert resolves(sandbox) == (upstream == "answered")
    sandbox.update_network({"deny_out": ["0.0.0.0/0"]})
    assert dns_query(sandbox) == "EACCES"
    assert not resolves(sandbox)
    # An allow-list is still deny-all: its holes are reached by address, not through the resolver.
    sandbox.update_network({"deny_out": ["0.0.0.0/0"], "allow_out": [TARGET]})
    assert dns_query(sandbox) == "EACCES"
    assert routed(sandbox, TARGET)
    sandbox.update_network({"deny_out": ["203.0.113.0/24"]})  # narrower rules leave DNS alone
    assert dns_query(sandbox) in ("answered", "sent")
    sandbox.update_network({"deny_out": ["0.0.0.0/0"]})
    sandbox.update_network({})
    assert dns_query(sandbox) == upstream
    assert resolves(sandbox) == (upstream == "answered")
    assert "dev tap0" in sandbox.commands.run("ip -4 route get 10.0.2.3 2>&1; true").stdout


@local_only
def test_no_internet_access_means_no_dns_from_the_first_command(e2b_env: LiveServer) -> None:
    closed, open_ = Sandbox.create(allow_internet_access=False), Sandbox.create()
    try:
        assert dns_query(closed) == "EACCES"
        assert dns_query(open_) in ("answered", "sent")  # another sandbox keeps its resolver
        undo = closed.commands.run("ip route del 10.0.2.3/32 2>&1; true").stdout.lower()
        assert "denied" in undo or "not permitted" in undo, undo
        assert dns_query(closed) == "EACCES"
        closed.update_network({})  # internet access back: the resolver with it
        assert dns_query(closed) in ("answered", "sent")
    finally:
        closed.kill()
        open_.kill()


@local_only
def test_deny_all_also_closes_the_servers_configured_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hostile: a range the operator opened for every sandbox (TROVE_SANDBOX_NETWORK_ALLOW, e.g.
    an internal mirror) has a more specific route than deny-all's; it must not stay a way out."""
    with start_server(sandbox_network_allow="203.0.113.0/24") as live:
        _point_sdk(monkeypatch, live, live.workspace_key)
        sbx = Sandbox.create(allow_internet_access=False)
        try:
            assert refused(sbx, TARGET)
            sbx.update_network({"deny_out": ["0.0.0.0/0"], "allow_out": [TARGET]})  # named: open
            assert routed(sbx, TARGET)
            sbx.update_network({})  # deny-all lifted: the exception's route is back
            assert routed(sbx, TARGET)
            sbx.update_network({"deny_out": ["0.0.0.0/0"]})
            assert refused(sbx, TARGET)
        finally:
            sbx.kill()


@local_only
def test_rules_given_at_create_hold_from_the_first_command(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create(network={"deny_out": ["203.0.113.0/24", "198.51.100.0/24"], "allow_out": [OTHER]})
    try:
        assert refused(sbx, TARGET)
        assert routed(sbx, OTHER)
        assert sbx.get_info().allow_internet_access is True
    finally:
        sbx.kill()


def test_domain_names_are_refused_plainly(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxException, match="domain names are not supported"):
        sandbox.update_network({"deny_out": ["example.com"]})
    with pytest.raises(SandboxException, match="domain names are not supported"):
        Sandbox.create(network={"allow_out": ["pypi.org"], "deny_out": ["0.0.0.0/0"]})


@local_only
def test_rules_survive_a_rebuilt_network(sandbox: Sandbox, e2b_env: LiveServer) -> None:
    sandbox.update_network({"deny_out": ["203.0.113.0/24"]})
    assert refused(sandbox, TARGET)
    networks: Any = e2b_env.ctx.runtime.networks  # type: ignore[attr-defined]
    key = f"{e2b_env.workspace_id}.{sandbox.sandbox_id}"
    first = networks.slirp_pid(key)
    os.kill(first, 9)  # the warm sandbox is restarted on a network built afresh
    # Dead before the next command (a zombie of this process until the runtime reaps it), so
    # the restart happens at that command's start, not between its start and its end.
    while Path(f"/proc/{first}").exists() and networks.slirp_pid(key) == first:
        if Path(f"/proc/{first}/stat").read_text().split(")")[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    assert refused(sandbox, TARGET)
    assert networks.slirp_pid(key) not in (None, first)
    assert routed(sandbox, OTHER)


@local_only
def test_rules_survive_a_server_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir: Path = make_data_dir()
    try:
        with start_server(data_dir=data_dir) as first:
            _point_sdk(monkeypatch, first, first.workspace_key)
            sbx = Sandbox.create(timeout=300)
            sbx.update_network({"deny_out": ["203.0.113.0/24"]})
            key = first.workspace_key
        with start_server(data_dir=data_dir) as second:
            _point_sdk(monkeypatch, second, key)
            again = Sandbox.connect(sbx.sandbox_id)
            assert refused(again, TARGET)
            assert routed(again, OTHER)
            again.kill()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@local_only
def test_one_sandboxs_rules_never_reach_another(e2b_env: LiveServer) -> None:
    closed, open_ = Sandbox.create(), Sandbox.create()
    try:
        assert routed(open_, TARGET)
        closed.update_network({"deny_out": ["0.0.0.0/0"]})
        assert refused(closed, TARGET)
        assert routed(open_, TARGET)
        open_.update_network({"deny_out": [OTHER]})
        closed.update_network({})
        assert routed(closed, OTHER)
        assert refused(open_, OTHER)
    finally:
        closed.kill()
        open_.kill()


@local_only
async def test_the_async_sdk_updates_the_network_too(e2b_env: LiveServer) -> None:
    sbx = await AsyncSandbox.create(allow_internet_access=False)
    try:
        lookup = f"ip -4 route get {TARGET} 2>&1; true"
        assert "via 10.0.2.2" not in (await sbx.commands.run(lookup)).stdout
        await sbx.update_network({"allow_out": [TARGET], "deny_out": ["0.0.0.0/0"]})
        assert "via 10.0.2.2 dev tap0" in (await sbx.commands.run(lookup)).stdout
        assert (await sbx.get_info()).network == {"allow_out": [f"{TARGET}/32"], "deny_out": ["0.0.0.0/0"]}
    finally:
        await sbx.kill()


@local_only
def test_the_sandbox_cannot_lift_its_own_rules(sandbox: Sandbox) -> None:
    sandbox.update_network({"deny_out": ["203.0.113.0/24"]})
    undo = sandbox.commands.run("ip route del 203.0.113.0/24 2>&1; ip route flush table main 2>&1; true")
    assert "denied" in undo.stdout.lower() or "not permitted" in undo.stdout.lower(), undo.stdout
    assert refused(sandbox, TARGET)


def test_oversized_and_malformed_rules_are_refused(sandbox: Sandbox, e2b_env: LiveServer) -> None:
    with pytest.raises(SandboxException, match="the limit is 256"):
        sandbox.update_network({"deny_out": [f"203.0.113.{i % 250}/32" for i in range(300)]})
    holes = [f"10.{i}.0.1" for i in range(250)]
    with pytest.raises(SandboxException, match="separate ranges"):
        sandbox.update_network({"deny_out": [f"10.{i}.0.0/16" for i in range(250)], "allow_out": holes})
    url = f"{e2b_env.base_url}/e2b/sandboxes/{sandbox.sandbox_id}/network"
    headers = {"X-API-KEY": e2b_env.workspace_key}
    assert httpx.put(url, headers=headers, json={"denyOut": "10.0.0.0/8"}).status_code == 400
    assert httpx.put(url, headers=headers, json=["10.0.0.0/8"]).status_code == 400
    assert httpx.put(url, headers=headers, content=b"{").status_code == 400
    missing = f"{e2b_env.base_url}/e2b/sandboxes/e2bnosuchsandbox/network"
    assert httpx.put(missing, headers=headers, json={}).status_code == 404


@local_only
def test_a_fork_keeps_its_parents_rules(sandbox: Sandbox) -> None:
    sandbox.update_network({"deny_out": ["203.0.113.0/24"]})
    (child,) = sandbox.fork()
    assert isinstance(child, Sandbox), child
    try:
        assert refused(child, TARGET)
        assert routed(child, OTHER)
    finally:
        child.kill()


@local_only
def test_an_adopted_namespace_gets_its_network_back_when_e2b_lets_go(
    e2b_env: LiveServer, namespace: str
) -> None:
    with client(e2b_env, namespace) as trove:
        trove.write("mine.txt", "trove-sdk made me")
        adopted = Sandbox.connect(namespace)
        adopted.update_network({"deny_out": ["203.0.113.0/24"]})
        assert refused(adopted, TARGET)
        adopted.kill()  # only the E2B session ends; the namespace stays trove-sdk's
        assert "via 10.0.2.2 dev tap0" in trove.exec(f"ip -4 route get {TARGET}")


@pytest.mark.skipif(not KUBERNETES, reason="the NetworkPolicy of a Kubernetes sandbox")
def test_rules_reach_the_network_policy(sandbox: Sandbox, e2b_env: LiveServer) -> None:
    from tests.support.cluster import cluster, read_or_none, wait_for
    from trove_core.crd import child_names
    from trove_core.runtime import NamespaceRef

    k8s = cluster()
    name = NamespaceRef(e2b_env.workspace_id, sandbox.sandbox_id).object_name
    policy_name = child_names(name).network_policy

    def read_policy() -> Any:
        # Sandbox.create returns before the operator has handled the new object; its policy
        # exists before any pod of it does, not necessarily before the first update_network.
        return read_or_none(k8s.networking.read_namespaced_network_policy, policy_name, k8s.namespace)

    def excepts() -> list[str]:
        policy = read_policy()
        if policy is None:
            return []
        return [
            cidr
            for rule in policy.spec.egress or []
            for peer in rule.to or []
            if peer.ip_block is not None
            for cidr in peer.ip_block._except or []
        ]

    sandbox.update_network({"deny_out": ["203.0.113.0/24"]})
    wait_for(lambda: "203.0.113.0/24" in excepts(), what="the denied range in the NetworkPolicy")
    sandbox.update_network({})
    wait_for(lambda: "203.0.113.0/24" not in excepts(), what="the range gone from the NetworkPolicy")
    sandbox.update_network({"deny_out": ["0.0.0.0/0"]})

    def no_egress() -> bool:
        return not read_policy().spec.egress

    wait_for(no_egress, what="a NetworkPolicy without egress")

    def resolver_open() -> bool:
        policy = read_policy()
        return any(
            peer.pod_selector is not None for rule in policy.spec.egress or [] for peer in rule.to or []
        )

    # An allow-list is deny-all with holes: the holes open, the cluster resolver stays cut.
    sandbox.update_network({"deny_out": ["0.0.0.0/0"], "allow_out": ["203.0.113.0/24"]})
    wait_for(lambda: bool(excepts()) and not resolver_open(), what="an allow-list without DNS")
    sandbox.update_network({})
    wait_for(resolver_open, what="DNS back once deny-all is lifted")


def _point_sdk(monkeypatch: pytest.MonkeyPatch, server: LiveServer, key: str) -> None:
    monkeypatch.setenv("E2B_API_URL", f"{server.base_url}/e2b")
    monkeypatch.setenv("E2B_SANDBOX_URL", f"{server.base_url}/e2b")
    monkeypatch.setenv("E2B_API_KEY", key)


@local_only
def test_an_unsandboxed_server_says_it_cannot_enforce(monkeypatch: pytest.MonkeyPatch) -> None:
    with start_server(sandbox="none") as bare:
        _point_sdk(monkeypatch, bare, bare.workspace_key)
        sbx = Sandbox.create()
        try:
            with pytest.raises(SandboxException, match="cannot enforce egress rules"):
                sbx.update_network({"deny_out": ["203.0.113.0/24"]})
            assert sbx.get_info().network in ({}, {"allow_out": [], "deny_out": []})  # not pretended
            sbx.update_network({})  # nothing to enforce: fine
            with pytest.raises(SandboxException, match="cannot enforce egress rules"):
                Sandbox.create(allow_internet_access=False)
        finally:
            sbx.kill()
