"""The (workspace, namespace) → object name mapping and child names."""

import re

from hypothesis import given
from hypothesis import strategies as st

from trove_core.crd import child_names, object_name

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
namespaces = st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True)


def test_name_is_readable_and_deterministic() -> None:
    name = object_name("ws-0123456789abcdef", "alice")
    assert name.startswith("alice-")
    assert name == object_name("ws-0123456789abcdef", "alice")


def test_same_namespace_in_two_workspaces_differs() -> None:
    assert object_name("ws-a", "alice") != object_name("ws-b", "alice")


def test_case_and_punctuation_variants_differ() -> None:
    names = {object_name("ws-a", n) for n in ["Alice", "alice", "al_ice", "al-ice", "ALICE_"]}
    assert len(names) == 5


def test_names_that_sanitise_to_nothing_or_digits() -> None:
    assert object_name("ws-a", "___").startswith("ns-")
    assert object_name("ws-a", "123").startswith("ns-123-")


@given(workspace=namespaces, namespace=namespaces)
def test_every_name_is_a_dns_label_with_room_for_children(workspace: str, namespace: str) -> None:
    name = object_name(workspace, namespace)
    children = child_names(name)
    for value in (name, children.pod, children.pvc, children.network_policy):
        assert DNS_LABEL.match(value), value
        assert len(value) <= 63


def test_child_names() -> None:
    children = child_names("alice-0123456789ab")
    assert (children.pod, children.pvc, children.network_policy) == (
        "alice-0123456789ab-pod",
        "alice-0123456789ab-data",
        "alice-0123456789ab-netpol",
    )


def test_a_namespace_reference_names_its_object_once() -> None:
    from trove_core.crd import object_name
    from trove_core.runtime import NamespaceRef

    ref = NamespaceRef("ws-1", "Alice")
    assert ref.object_name == object_name("ws-1", "Alice")
    assert ref.object_name is ref.object_name  # computed once, then kept on the reference
    assert NamespaceRef("ws-2", "Alice").object_name != ref.object_name
