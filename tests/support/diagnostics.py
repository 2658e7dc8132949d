"""What the cluster looked like when an e2e test failed: the operator's log, objects in transit, events.

CI shows only the failure report, and the test namespace and the operator's log are gone when
the run ends; a report that carries them makes a failure there diagnosable afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Any

from kubernetes import client

from tests.support import cluster as test_cluster
from trove_core.crd import GROUP, PLURAL, VERSION
from trove_operator.reconciler import settled

LOG_LINES = 40
EVENTS = 15


def _operator_log(handle: test_cluster.Cluster) -> str:
    try:
        lines = handle.operator_log.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(unreadable: {exc})"
    return "\n".join(lines[-LOG_LINES:])


def _unsettled(handle: test_cluster.Cluster) -> str:
    """TroveNamespaces in transit (the operator's ``settled`` says no), with the operator's reason."""
    items = handle.custom.list_namespaced_custom_object(GROUP, VERSION, handle.namespace, PLURAL)["items"]
    rows = [f"{len(items)} TroveNamespaces in {handle.namespace}"]
    for item in items:
        if settled(item):
            continue
        status: dict[str, Any] = item.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        rows.append(
            f"{item['metadata']['name']} created {item['metadata'].get('creationTimestamp')}: "
            f"{status.get('phase')} {ready.get('reason', '')} {status.get('message', '')}".rstrip()
        )
    return "\n".join(rows)


def _events(handle: test_cluster.Cluster) -> str:
    events = handle.core.list_namespaced_event(handle.namespace).items

    def when(event: client.CoreV1Event) -> str:
        stamp = event.last_timestamp or event.event_time or event.first_timestamp
        return stamp.isoformat() if stamp else ""

    recent = sorted(events, key=when)[-EVENTS:]
    return "\n".join(
        f"{when(e)} {e.type} {e.reason} {e.involved_object.kind}/{e.involved_object.name}: {e.message}"
        for e in recent
    )


def sections() -> list[tuple[str, str]]:
    """Report sections for a failed test; none when no cluster was used."""
    handle = test_cluster.current()
    if handle is None:
        return []
    found = [("operator log (last lines)", _operator_log(handle))]
    for title, read in (("trovenamespaces in transit", _unsettled), ("recent events", _events)):
        text = "(unavailable)"
        with contextlib.suppress(Exception):  # diagnostics never replace the real failure
            text = read(handle)
        found.append((title, text))
    return found
