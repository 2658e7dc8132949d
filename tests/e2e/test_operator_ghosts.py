"""An object deleted before the operator handled it leaves no timer running behind it.

kopf batches a create and a delete that come close together into one DELETED event and used to
spawn the object's timers from it, timers nothing ever stopped (trove_operator.ghosts). In the
official CI they synced a vanished E2B sandbox every two seconds for the rest of the run.
"""

from __future__ import annotations

import secrets
import time

from tests.e2e.test_operator import create_tns, phase_is
from tests.e2e.test_warm_pool import create_pool, pool_status
from tests.support.cluster import SANDBOX_IMAGE, Cluster, read_or_none, wait_for
from trove_core.crd import GROUP, LABEL_POOL, PLURAL, POOL_PLURAL, VERSION, child_names

# The create handlers may still run once while the objects exist (kopf may see them before
# their deletion); what follows that is a timer's. A ghost's idle check ran after initial_delay
# (2 s here) plus kopf's idle delay (10 s); the pool's timer every second. The re-sync timer
# (20 s) is the idle check's twin, filtered alike.
SETTLE_S = 3
WATCH_S = 16


def _members(k8s: Cluster, pool: str) -> list[str]:
    pods = k8s.core.list_namespaced_pod(k8s.namespace, label_selector=f"{LABEL_POOL}={pool}").items
    return [p.metadata.name for p in pods]


def _pool(k8s: Cluster, name: str, size: int) -> None:
    # A storage size no other test's namespace asks for: nothing claims its members.
    create_pool(k8s, name, size, {"image": SANDBOX_IMAGE, "storage": {"size": "41Mi"}})


def _watching(k8s: Cluster) -> None:
    """Wait until the operator handles both kinds (a fresh one may not be watching yet, and an
    object it never saw cannot haunt it)."""
    pool = "alive-" + secrets.token_hex(3)
    _pool(k8s, pool, 0)
    name = create_tns(k8s, suspended=True)
    try:
        wait_for(lambda: "size" in pool_status(k8s, pool), what="the operator handling pools")
        wait_for(lambda: phase_is(k8s, name, "Suspended"), what="the operator handling namespaces")
    finally:
        k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, k8s.namespace, POOL_PLURAL, pool)
        k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL, name)


def test_objects_deleted_at_once_get_no_timers(k8s: Cluster) -> None:
    _watching(k8s)
    pool = "ghost-" + secrets.token_hex(3)
    _pool(k8s, pool, 1)
    k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, k8s.namespace, POOL_PLURAL, pool)
    name = create_tns(k8s)
    k8s.custom.delete_namespaced_custom_object(GROUP, VERSION, k8s.namespace, PLURAL, name)
    deadline = time.monotonic() + WATCH_S
    time.sleep(SETTLE_S)
    wait_for(lambda: not _members(k8s, pool), what="the members made while the pool existed collected")
    log_start = k8s.operator_log.stat().st_size

    seen: list[str] = []
    while time.monotonic() < deadline and not seen:
        seen += [f"pool member {member}" for member in _members(k8s, pool)]
        policy = child_names(name).network_policy
        if read_or_none(k8s.networking.read_namespaced_network_policy, policy, k8s.namespace) is not None:
            seen.append(f"NetworkPolicy of {name}")
        with k8s.operator_log.open("rb") as log:
            log.seek(log_start)
            seen += [
                line.decode(errors="replace")
                for line in log.read().splitlines()
                if b"trove_operator" in line and (name.encode() in line or pool.encode() in line)
            ]
        time.sleep(0.5)
    assert not seen, f"the operator still acts for objects already deleted: {seen}"
