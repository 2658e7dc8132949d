"""Sandbox lifecycle through the official e2b SDK: create, connect, list, info, timeout, kill."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
import pytest
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import NotFoundException, SandboxException

from tests.e2b import WAIT_S
from tests.support import cluster
from tests.support.sdk import client
from tests.support.server import LiveServer, start_server
from trove_core.crd import GROUP, PLURAL, VERSION, object_name

T = TypeVar("T")


def test_create_info_list_kill(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create(timeout=120, metadata={"suite": "e2b", "who": "lifecycle"}, envs={"A": "1"})
    try:
        assert sbx.is_running()
        info = sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.metadata == {"suite": "e2b", "who": "lifecycle"}
        assert info.state == SandboxState.RUNNING
        found = Sandbox.list(query=SandboxQuery(metadata={"who": "lifecycle"})).next_items()
        assert [s.sandbox_id for s in found] == [sbx.sandbox_id]
        base = Sandbox.list(query=SandboxQuery(metadata={"who": "lifecycle"}, template="base"))
        assert [s.sandbox_id for s in base.next_items()] == [sbx.sandbox_id]
        other = Sandbox.list(query=SandboxQuery(metadata={"who": "lifecycle"}, template="other"))
        assert other.next_items() == []
        sbx.set_timeout(300)
        assert sbx.get_info().end_at > info.end_at
    finally:
        sbx.kill()
    assert not sbx.is_running()
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sbx.sandbox_id)
    with pytest.raises(NotFoundException):  # a killed sandbox is not adopted back
        Sandbox.connect(sbx.sandbox_id)
    assert Sandbox.kill(sbx.sandbox_id) is False


def test_list_pages(e2b_env: LiveServer) -> None:
    made = [Sandbox.create(metadata={"who": "pages"}) for _ in range(3)]
    try:
        pager = Sandbox.list(query=SandboxQuery(metadata={"who": "pages"}), limit=2)
        first = pager.next_items()
        assert len(first) == 2
        assert pager.has_next
        second = pager.next_items()
        assert not pager.has_next
        assert {s.sandbox_id for s in first + second} == {s.sandbox_id for s in made}
    finally:
        for sbx in made:
            sbx.kill()


def test_files_are_the_namespace_files(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    try:
        sbx.files.write("notes/a.txt", "from e2b")
        with client(e2b_env, sbx.sandbox_id) as trove:
            assert trove.read("notes/a.txt") == "from e2b"
            trove.write("b.txt", "from trove")
        assert sbx.files.read("/home/user/b.txt") == "from trove"
    finally:
        sbx.kill()


def test_pause_then_connect_keeps_files(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    try:
        sbx.files.write("kept.txt", "still here")
        sbx.pause()
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
        paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()
        running = Sandbox.list(query=SandboxQuery(state=[SandboxState.RUNNING])).next_items()
        assert sbx.sandbox_id in {s.sandbox_id for s in paused}
        assert sbx.sandbox_id not in {s.sandbox_id for s in running}
        assert not sbx.is_running()
        handle = cluster.current()
        if handle is not None:  # Kubernetes: the pod is given back (suspended), the claim kept
            name = object_name(e2b_env.workspace_id, sbx.sandbox_id)
            obj = handle.custom.get_namespaced_custom_object(GROUP, VERSION, handle.namespace, PLURAL, name)
            assert obj["spec"]["suspended"] is True
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.is_running()
        assert again.files.read("kept.txt") == "still here"
    finally:
        sbx.kill()


@pytest.fixture(scope="module")
def impatient_server() -> Iterator[LiveServer]:
    """Each call waits at most 2 s for its sandbox: less than a pod's way back from a pause
    (the old pod's teardown, then the new one's start: 6 s on a quiet node, 20 s and more in CI)."""
    with start_server(k8s_ready_timeout_s=2) as live:
        yield live


def _until_it_answers(call: Callable[[], T]) -> T:
    """A brand-new sandbox's pod may outlast a 2 s wait too: that is not what is tested here."""
    deadline = time.monotonic() + 90
    while True:
        try:
            return call()
        except SandboxException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_resume_waits_for_the_sandbox_longer_than_one_call_does(
    impatient_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2B_API_URL", f"{impatient_server.base_url}/e2b")
    monkeypatch.setenv("E2B_SANDBOX_URL", f"{impatient_server.base_url}/e2b")
    monkeypatch.setenv("E2B_API_KEY", impatient_server.workspace_key)
    sbx = Sandbox.create()
    try:
        _until_it_answers(lambda: sbx.files.write("kept.txt", "across the pause"))
        sbx.pause()
        # E2B's connect answers a running sandbox: the next call needs no retry.
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.files.read("kept.txt") == "across the pause"
        assert again.commands.run("cat kept.txt").stdout == "across the pause"
    finally:
        sbx.kill()


def test_metrics_report_disk_use(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    try:
        sbx.files.write("ten.bin", b"0123456789")
        metrics = sbx.get_metrics()
        assert metrics[-1].disk_used == 10
    finally:
        sbx.kill()


def test_changes_through_e2b_are_trove_events(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    try:
        sbx.files.write("ev/a.txt", "1")
        sbx.files.remove("ev/a.txt")
        r = httpx.get(
            f"{e2b_env.base_url}/v1/workspaces/{e2b_env.workspace_id}/events",
            params={"namespace": sbx.sandbox_id},
            headers={"Authorization": f"Bearer {e2b_env.workspace_key}"},
            timeout=WAIT_S,
        )
        assert r.status_code == 200, r.text
        seen = [(e["type"], e["data"].get("path")) for e in r.json()["events"]]
        assert ("file.written", "workspace/ev/a.txt") in seen
        assert ("file.deleted", "workspace/ev/a.txt") in seen
    finally:
        sbx.kill()


@pytest.mark.skipif(
    os.environ.get("TROVE_TEST_BACKEND") == "kubernetes", reason="the local runtime's warm set"
)
def test_create_starts_the_sandbox_ahead_of_its_first_call(e2b_env: LiveServer) -> None:
    """E2B's create answers a running sandbox: Trove starts its agent while the answer goes out."""
    warm = e2b_env.ctx.runtime.sandboxes.warm  # type: ignore[attr-defined]
    sbx = Sandbox.create()
    try:
        key = f"{e2b_env.workspace_id}.{sbx.sandbox_id}"
        for _ in range(5000):  # started in the background: poll, do not time
            if key in warm:
                break
            time.sleep(0.002)
        assert key in warm
        assert sbx.commands.run("echo ran").stdout == "ran\n"
    finally:
        sbx.kill()
    assert key not in warm
