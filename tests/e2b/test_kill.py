"""``Sandbox.kill`` frees the namespace: sandbox, files and storage gone, ``namespace.deleted``
emitted; a namespace trove-sdk made is never deleted by an E2B call."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import httpx
import pytest
from e2b import AsyncSandbox, CommandExitException, PtySize, Sandbox
from e2b.exceptions import NotFoundException

from tests.e2b import WAIT_S
from tests.support.sdk import client
from tests.support.server import LiveServer
from trove_core.runtime import NamespaceRef


def events_of(server: LiveServer, namespace: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{server.base_url}/v1/workspaces/{server.workspace_id}/events",
        params={"namespace": namespace, "limit": 200},
        headers={"Authorization": f"Bearer {server.workspace_key}"},
        timeout=WAIT_S,
    )
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


def known(server: LiveServer, namespace: str) -> bool:
    """Whether the server still has the namespace's row (``find`` reads only the database)."""
    return asyncio.run(server.ctx.namespaces.find(server.workspace_id, namespace)) is not None


def storage_left(server: LiveServer, namespace: str) -> bool:
    """The runtime's own view of what is left of the namespace."""
    ref = NamespaceRef(workspace_id=server.workspace_id, name=namespace)
    if os.environ.get("TROVE_TEST_BACKEND") == "kubernetes":
        from kubernetes.client.exceptions import ApiException

        from tests.support.cluster import cluster, wait_for
        from trove_core.crd import GROUP, PLURAL, VERSION

        k8s = cluster()

        def gone() -> bool:
            try:
                k8s.custom.get_namespaced_custom_object(
                    GROUP, VERSION, k8s.namespace, PLURAL, ref.object_name
                )
            except ApiException as exc:
                return exc.status == 404
            return False

        # The operator releases its finalizer, then garbage collection takes pod and PVC.
        wait_for(gone, what=f"TroveNamespace {ref.object_name} deleted")
        return False
    runtime: Any = server.ctx.runtime
    warm = f"{ref.workspace_id}.{ref.name}" in runtime.sandboxes.warm
    return bool(warm or runtime.has_storage(ref))


def test_kill_removes_the_sandbox_and_its_storage(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    sbx.files.write("big/data.bin", b"x" * 100_000)
    sbx.commands.run("sleep 600", background=True)
    if os.environ.get("TROVE_TEST_BACKEND") != "kubernetes":
        assert storage_left(e2b_env, sbx.sandbox_id)
    sbx.kill()
    with pytest.raises(NotFoundException):
        Sandbox.connect(sbx.sandbox_id)
    assert not known(e2b_env, sbx.sandbox_id)
    assert not storage_left(e2b_env, sbx.sandbox_id)
    types = [e["type"] for e in events_of(e2b_env, sbx.sandbox_id)]
    assert types.count("namespace.deleted") == 1
    # Nothing brings it back: the id stays dead, and no call provisioned it again.
    with pytest.raises(NotFoundException):
        Sandbox.connect(sbx.sandbox_id)
    assert not known(e2b_env, sbx.sandbox_id)


def test_kill_of_an_adopted_trove_namespace_keeps_it(e2b_env: LiveServer, namespace: str) -> None:
    with client(e2b_env, namespace) as trove:
        trove.write("mine.txt", "trove-sdk made me")
    adopted = Sandbox.connect(namespace)
    assert adopted.files.read("mine.txt") == "trove-sdk made me"
    adopted.kill()
    assert Sandbox.kill(namespace) is False
    with client(e2b_env, namespace) as trove:
        assert trove.read("mine.txt") == "trove-sdk made me"
    assert known(e2b_env, namespace)
    assert "namespace.deleted" not in [e["type"] for e in events_of(e2b_env, namespace)]
    if os.environ.get("TROVE_TEST_BACKEND") != "kubernetes":
        runtime: Any = e2b_env.ctx.runtime
        assert runtime.has_storage(NamespaceRef(workspace_id=e2b_env.workspace_id, name=namespace))


def test_a_kill_cut_off_before_the_deletion_is_finished_by_the_sweeper(e2b_env: LiveServer) -> None:
    from trove_api.e2b.records import SandboxRecords

    sbx = Sandbox.create()
    sbx.files.write("left.txt", "behind")
    # What a server that died right after writing the tombstone leaves: killed, namespace there.
    SandboxRecords(e2b_env.ctx.db).set(sbx.sandbox_id, state="killed")
    assert known(e2b_env, sbx.sandbox_id)
    # The server's sweeper runs every e2b_sweep_interval_s: polled, no timing asserted.
    for _ in range(400):
        if not known(e2b_env, sbx.sandbox_id):
            break
        time.sleep(0.05)
    assert not known(e2b_env, sbx.sandbox_id)
    assert not storage_left(e2b_env, sbx.sandbox_id)
    assert [e["type"] for e in events_of(e2b_env, sbx.sandbox_id)].count("namespace.deleted") == 1


def test_a_killed_sandboxs_snapshots_stay_usable(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    sbx.files.write("state.txt", "snapped")
    snap = sbx.create_snapshot()
    sbx.kill()
    assert not known(e2b_env, sbx.sandbox_id)
    restored = Sandbox.create(template=snap.snapshot_id)
    try:
        assert restored.files.read("state.txt") == "snapped"
    finally:
        restored.kill()
        Sandbox.delete_snapshot(snap.snapshot_id)


# Prints its marker 10 s in: a stream that sees it was not ended by the kill, however the
# machine is loaded (the kill comes right after "start" arrives).
MARKED = "echo start; sleep 10; echo late-marker"
# Every process's command line, from /proc (images need not have ps); this one's own has no marker.
PROCESSES = "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; true"


class Follower:
    """Reads a command handle's stream in a thread, as a client streaming output does."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.output: list[str] = []
        self.started = threading.Event()
        self.ended: list[str] = []
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _on_output(self, data: Any) -> None:
        self.output.append(data if isinstance(data, str) else bytes(data).decode(errors="replace"))
        if "start" in "".join(self.output):
            self.started.set()

    def _follow(self) -> None:
        try:
            result = self.handle.wait(on_stdout=self._on_output, on_pty=self._on_output)
            self.ended.append(f"exit {result.exit_code}")
        except Exception as exc:  # what the SDK raises when the stream ends under it
            self.ended.append(type(exc).__name__)
        finally:
            self.started.set()

    def finish(self) -> str:
        """Joined: how the stream ended. A stream the kill left open runs into the marker."""
        self.thread.join(WAIT_S)
        assert self.ended, "the stream did not end"
        assert "late-marker" not in "".join(self.output), "the stream outlived the end of the sandbox"
        return self.ended[0]


def test_kill_ends_every_open_command_stream(e2b_env: LiveServer) -> None:
    sbx = Sandbox.create()
    started = sbx.commands.run(MARKED, background=True)
    followers = [Follower(started), Follower(sbx.commands.connect(started.pid))]
    terminal = sbx.pty.create(PtySize(rows=24, cols=80))
    followers.append(Follower(terminal))
    # Typed lines are echoed: neither word appears until the shell runs them.
    sbx.pty.send_stdin(terminal.pid, b'echo sta""rt; sleep 10; echo late-$(echo marker)\n')
    for follower in followers:
        assert follower.started.wait(WAIT_S)
    sbx.kill()
    for follower in followers:
        follower.finish()


def test_kill_of_an_adopted_namespace_ends_the_commands_e2b_started(
    e2b_env: LiveServer, namespace: str
) -> None:
    """The namespace stays trove-sdk's, but the E2B sandbox is gone: what E2B started in it
    ends with it (its streams at once), as on E2B."""
    with client(e2b_env, namespace) as trove:
        trove.write("mine.txt", "trove-sdk made me")
    adopted = Sandbox.connect(namespace)
    follower = Follower(adopted.commands.run(MARKED, background=True))
    assert follower.started.wait(WAIT_S)
    adopted.kill()
    assert follower.finish() == "CommandExitException"  # killed: 137, as E2B's kill gives
    with client(e2b_env, namespace) as trove:
        assert trove.read("mine.txt") == "trove-sdk made me"
        assert "late-marker" not in trove.exec(PROCESSES)
        assert trove.exec("echo still mine").strip() == "still mine"


async def test_async_kill_of_an_adopted_namespace_ends_its_streams(
    e2b_env: LiveServer, namespace: str
) -> None:
    with client(e2b_env, namespace) as trove:
        trove.write("mine.txt", "x")
    adopted = await AsyncSandbox.connect(namespace)
    output: list[str] = []
    first = asyncio.Event()

    def on_stdout(data: str) -> None:
        output.append(data)
        first.set()

    handle = await adopted.commands.run(MARKED, background=True, on_stdout=on_stdout)
    await asyncio.wait_for(first.wait(), WAIT_S)
    await adopted.kill()
    with pytest.raises(CommandExitException):
        await asyncio.wait_for(handle.wait(), WAIT_S)
    assert "late-marker" not in "".join(output)


def test_kill_does_not_wait_for_a_call_in_flight(e2b_env: LiveServer) -> None:
    """A trove-sdk exec holds the namespace's lock while it runs; the kill ends it rather than
    waiting for it (it would print its marker 10 s in)."""
    sbx = Sandbox.create()
    ended: list[str] = []
    running = threading.Event()

    def trove_exec() -> None:
        with client(e2b_env, sbx.sandbox_id) as trove:
            trove.write("ready.txt", "")
            running.set()
            try:
                ended.append(trove.exec("sleep 10; echo late-marker"))
            except Exception as exc:  # the sandbox went from under it
                ended.append(type(exc).__name__)

    thread = threading.Thread(target=trove_exec, daemon=True)
    thread.start()
    assert running.wait(WAIT_S)
    for _ in range(500):  # until the exec runs (polled, not timed)
        if "late-marker" in sbx.commands.run(PROCESSES).stdout:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the trove-sdk exec never started")
    sbx.kill()
    ended.append("killed")
    thread.join(WAIT_S)
    assert not any("late-marker" in e for e in ended), ended
    assert not known(e2b_env, sbx.sandbox_id)


def test_pause_ends_the_commands_and_their_streams(e2b_env: LiveServer) -> None:
    """No process survives a pause (Trove keeps no memory): its streams end at once, and the
    command never gets to its marker; files stay for the resume."""
    sbx = Sandbox.create()
    sbx.files.write("kept.txt", "still here")
    follower = Follower(sbx.commands.run(MARKED, background=True))
    assert follower.started.wait(WAIT_S)
    sbx.pause()
    follower.finish()
    resumed = Sandbox.connect(sbx.sandbox_id)
    try:
        assert resumed.commands.list() == []
        assert resumed.files.read("kept.txt") == "still here"
    finally:
        resumed.kill()
