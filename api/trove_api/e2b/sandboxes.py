"""E2B's control plane over Trove: a sandbox is a namespace, its snapshots are Trove snapshots.

Only namespaces created through E2B (``owned``) are paused or wiped when their E2B timeout
expires; a namespace adopted by ``Sandbox.connect`` (made by trove-sdk, say) only loses its
E2B session. Trove keeps no memory across a pause: files survive, processes do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from trove_api.context import AppContext
from trove_api.e2b.egress import ALL_IPV4, EgressRules, rules_from
from trove_api.e2b.records import SandboxRecord, SandboxRecords, egress_json
from trove_api.e2b.request_checks import E2bApiError, RequestChecks, not_found
from trove_api.logs import detached_task
from trove_api.services.auth import Caller
from trove_core.errors import EgressRulesUnsupportedError, SandboxNotReadyError, TroveError
from trove_core.names import validate_namespace
from trove_core.runtime import SandboxUsage

log = logging.getLogger(__name__)

BASE_TEMPLATE = "base"
# The envd protocol version Trove speaks: octet-stream uploads (0.5.7), file metadata fields.
ENVD_VERSION = "0.5.7"
CLIENT_ID = "trove"
CPU_SAMPLE_S = 0.1


def owner_caller(rec: SandboxRecord) -> Caller:
    """Who in-sandbox calls act as: the key that created the sandbox or connected to it last."""
    return Caller(
        key_id=rec.key_id,
        key_name=rec.key_name,
        workspace_id=rec.workspace_id,
        scope="workspace",
        namespace=None,
    )


class SandboxService(RequestChecks):
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.records = SandboxRecords(ctx.db)
        # Told when a sandbox's E2B session ends or pauses (the processes service ends its commands).
        self.on_end: list[Callable[[SandboxRecord], Awaitable[None]]] = []
        self.settings = ctx.settings
        # The last CPU sample per sandbox: E2B's CPU percentage is the rate since the one before.
        self._cpu_samples: dict[str, tuple[float, int]] = {}
        # One network update at a time: the stored rules and the runtime's never disagree.
        self._network_lock = asyncio.Lock()
        self._starting: dict[str, asyncio.Task[None]] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    async def create(self, caller: Caller, body: dict[str, Any]) -> SandboxRecord:
        template = str(body.get("templateID") or BASE_TEMPLATE)
        source = None
        if template != BASE_TEMPLATE:
            source = await asyncio.to_thread(self.records.snapshot_namespace, caller.workspace_id, template)
            if source is None:
                raise E2bApiError(
                    404, f"template {template[:140]!r} not found: Trove serves 'base' and its own snapshots"
                )
        sandbox_id = "e2b" + secrets.token_hex(10)
        # A locked key reaches one namespace; a new sandbox would be another.
        self.reach(caller, sandbox_id)
        rec = self._new_record(caller, sandbox_id, template, body)
        ns = await self.ctx.namespaces.ensure(caller.workspace_id, sandbox_id, caller.actor)
        if rec.egress.blocked:
            # Before anything runs in it: its first command is already under the rules.
            await self.ctx.runtime.set_egress(ns, rec.egress.blocked, dns=rec.egress.dns)
        if source is not None:
            await self._restore_into(caller, sandbox_id, source, template)
        await asyncio.to_thread(self.records.insert, rec)
        self._warm_up(caller.workspace_id, sandbox_id)
        return rec

    def _warm_up(self, workspace_id: str, sandbox_id: str, *, until: float = 0.0) -> asyncio.Task[None]:
        """E2B's create answers a running sandbox: it starts now, while the answer is on its
        way, and the first command finds it started (or waits for the same start). A start
        that finds the sandbox not ready is tried again until ``until`` (``time.monotonic()``)."""
        task = detached_task(self._start(workspace_id, sandbox_id, until), name=f"e2b-start-{sandbox_id}")
        self._starting[sandbox_id] = task
        task.add_done_callback(functools.partial(self._started, sandbox_id))
        return task

    def _started(self, sandbox_id: str, task: asyncio.Task[None]) -> None:
        if self._starting.get(sandbox_id) is task:  # not a later start of the same sandbox
            del self._starting[sandbox_id]

    def _stop_warm_up(self, sandbox_id: str) -> None:
        """A pause or kill: a start still under way would hold the sandbox's lock waiting for a
        pod that is not coming (Kubernetes), or start what was just stopped."""
        task = self._starting.pop(sandbox_id, None)
        if task is not None:
            task.cancel()

    async def _start(self, workspace_id: str, sandbox_id: str, until: float) -> None:
        while True:
            try:
                # Shared, as a command's call: a kill (exclusive) waits for it or goes first.
                async with self.ctx.files.locks.shared(workspace_id, sandbox_id):
                    rec = await asyncio.to_thread(self.records.get, workspace_id, sandbox_id)
                    ns = await self.ctx.namespaces.find(workspace_id, sandbox_id)
                    if rec is not None and rec.state == "running" and ns is not None:
                        await self.ctx.runtime.list_processes(ns)  # starts the sandbox's agent
                return
            except SandboxNotReadyError:
                if time.monotonic() + 1 < until:
                    await asyncio.sleep(1)  # each try waited its own deadline, or was told why not
                    continue
                log.info("e2b: sandbox %s was not ready in time", sandbox_id, exc_info=True)
                return
            except Exception:  # the first call starts it (and says why it cannot)
                log.info("e2b: starting sandbox %s ahead of its first call failed", sandbox_id, exc_info=True)
                return

    async def aclose(self) -> None:
        starting = list(self._starting.values())
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)

    async def connect(self, caller: Caller, sandbox_id: str, body: dict[str, Any]) -> SandboxRecord:
        self.reach(caller, sandbox_id)
        rec = await asyncio.to_thread(self.records.get, caller.workspace_id, sandbox_id)
        timeout = self._timeout(body.get("timeout"))
        if rec is not None and rec.state == "killed":
            raise not_found(sandbox_id)
        if rec is None:
            # Any namespace of the workspace is a sandbox: adopt it (never wiped by a timeout).
            with contextlib.suppress(TroveError):
                validate_namespace(sandbox_id)
                if await self.ctx.namespaces.find(caller.workspace_id, sandbox_id) is not None:
                    rec = replace(
                        self._new_record(caller, sandbox_id, BASE_TEMPLATE, {"timeout": timeout}), owned=False
                    )
                    await asyncio.to_thread(self.records.insert, rec)
                    return rec
            raise not_found(sandbox_id)
        end_at = max(rec.end_at, time.time() + timeout)
        # In-sandbox calls act as the key that connected last: a revoked creator's key does not
        # strand a sandbox another key of the workspace may reach.
        await asyncio.to_thread(
            self.records.set,
            sandbox_id,
            state="running",
            end_at=end_at,
            key_id=caller.key_id,
            key_name=caller.key_name,
        )
        if rec.state == "paused":
            # E2B's resume answers a running sandbox. On Kubernetes its pod comes back now, which
            # can outlast one call's wait for it (the old pod's teardown comes first): the resume
            # waits longer, and a pause or kill meanwhile ends the wait (it cancels the start).
            until = time.monotonic() + self.settings.e2b_resume_wait_s
            await asyncio.wait({self._warm_up(caller.workspace_id, sandbox_id, until=until)})
        return replace(rec, state="running", end_at=end_at, key_id=caller.key_id, key_name=caller.key_name)

    async def update_network(self, caller: Caller, sandbox_id: str, body: dict[str, Any]) -> None:
        """E2B's update replaces the whole configuration: omitted lists are cleared."""
        await self.get(caller, sandbox_id)
        rules = rules_from(body, body.get("allow_internet_access"))
        ns = await self.ctx.namespaces.ensure(caller.workspace_id, sandbox_id, caller.actor)
        async with self._network_lock:
            before = await self.get(caller, sandbox_id)
            # Stored first and kept should the runtime fail (it keeps the new rules too, and a
            # local network that could not take them is rebuilt with them): a retry or a
            # restart applies what was asked for, never the rules it replaced.
            await self._store_egress(sandbox_id, rules)
            try:
                await self.ctx.runtime.set_egress(ns, rules.blocked, dns=rules.dns)
            except EgressRulesUnsupportedError:
                await self._store_egress(sandbox_id, before.egress)  # never shown as if enforced
                raise

    async def _store_egress(self, sandbox_id: str, rules: EgressRules) -> None:
        await asyncio.to_thread(
            self.records.set,
            sandbox_id,
            egress_json=egress_json(rules),
            allow_internet_access=ALL_IPV4 not in rules.deny_out,
        )

    async def restore_egress(self) -> None:
        """Tell the runtime every live sandbox's rules again (a server restart forgets them)."""
        for rec in await asyncio.to_thread(self.records.with_egress):
            try:
                ns = await self.ctx.namespaces.find(rec.workspace_id, rec.sandbox_id)
                if ns is not None:
                    await self.ctx.runtime.set_egress(ns, rec.egress.blocked, dns=rec.egress.dns)
            except Exception:
                log.exception("e2b: re-applying the egress rules of %s failed", rec.sandbox_id)

    async def listing(self, caller: Caller) -> list[SandboxRecord]:
        records = await asyncio.to_thread(self.records.listing, caller.workspace_id)
        if caller.namespace is not None:
            records = [r for r in records if r.sandbox_id == caller.namespace]
        return records

    async def set_timeout(self, caller: Caller, sandbox_id: str, seconds: Any) -> None:
        await self.get(caller, sandbox_id)
        end_at = time.time() + self._timeout(seconds)
        await asyncio.to_thread(self.records.set, sandbox_id, end_at=end_at)

    async def pause(self, caller: Caller, sandbox_id: str) -> None:
        rec = await self.get(caller, sandbox_id)
        if rec.state == "paused":
            raise E2bApiError(409, f"sandbox {sandbox_id!r} is already paused")
        await asyncio.to_thread(self.records.set, sandbox_id, state="paused")
        await self._halt(rec)

    async def _halt(self, rec: SandboxRecord) -> None:
        """A pause: nothing E2B ran goes on (its streams end); an owned sandbox is suspended
        whole (on Kubernetes its pod goes until a call wakes it)."""
        self._stop_warm_up(rec.sandbox_id)
        for hook in self.on_end:
            await hook(rec)
        ns = await self.ctx.namespaces.find(rec.workspace_id, rec.sandbox_id) if rec.owned else None
        if ns is not None:
            await self.ctx.runtime.suspend(ns)

    async def kill(self, caller: Caller, sandbox_id: str) -> None:
        rec = await self.get(caller, sandbox_id)
        await self._end(rec)

    async def _end(self, rec: SandboxRecord) -> None:
        self._cpu_samples.pop(rec.sandbox_id, None)
        self._stop_warm_up(rec.sandbox_id)
        for hook in self.on_end:
            await hook(rec)
        if rec.owned:
            # Killed first: in-sandbox calls are refused from now on (502, as E2B's proxy answers).
            # The row stays as a tombstone, so connect never adopts the id as a new sandbox.
            await asyncio.to_thread(self.records.set, rec.sandbox_id, state="killed")
            try:
                await self._free(rec)
            except Exception:
                # Storage still there: the sandbox is as it was, and the kill can be tried again.
                await asyncio.to_thread(self.records.set, rec.sandbox_id, state=rec.state)
                raise
        else:
            # An adopted namespace stays the user's: only its E2B session ends, and with it the
            # egress rules set through E2B (no record would bring them back after a restart).
            if rec.egress.blocked:
                ns = await self.ctx.namespaces.find(rec.workspace_id, rec.sandbox_id)
                if ns is not None:
                    await self.ctx.runtime.set_egress(ns, [])
            await asyncio.to_thread(self.records.remove, rec.sandbox_id)

    async def usage(self, caller: Caller, sandbox_id: str) -> tuple[SandboxUsage, float]:
        """The sandbox's figures and its CPU use in percent of its CPUs since the last sample
        (the first call samples twice, ``CPU_SAMPLE_S`` apart)."""
        rec = await self.get(caller, sandbox_id)
        ns = await self.ctx.namespaces.ensure(caller.workspace_id, rec.sandbox_id, caller.actor)
        previous = self._cpu_samples.get(sandbox_id)
        if previous is None:
            first = await self.ctx.runtime.usage(ns)
            previous = (time.monotonic(), first.cpu_ns)
            await asyncio.sleep(CPU_SAMPLE_S)
        figures = await self.ctx.runtime.usage(ns)
        now = time.monotonic()
        self._cpu_samples[sandbox_id] = (now, figures.cpu_ns)
        # In percent of the CPUs it is given (a pod's limit), not of the node's it can see.
        wall_ns = (now - previous[0]) * 1e9 * max(1, self.ctx.runtime.sandbox_size().cpu_count)
        pct = max(0.0, min(100.0, (figures.cpu_ns - previous[1]) * 100 / wall_ns)) if wall_ns > 0 else 0.0
        return figures, round(pct, 2)

    async def _free(self, rec: SandboxRecord) -> None:
        ns = await self.ctx.namespaces.find(rec.workspace_id, rec.sandbox_id)
        if ns is not None:
            # Everything in it ends now: a call in flight (a trove-sdk exec, an upload) holds the
            # namespace's lock until it ends, and a kill does not wait for it, as on E2B.
            await self.ctx.runtime.stop_sandbox(ns)
        async with self.ctx.files.locks.exclusive(rec.workspace_id, rec.sandbox_id):
            await self.ctx.namespaces.delete(rec.workspace_id, rec.sandbox_id, owner_caller(rec).actor)

    # -- copies of the files ------------------------------------------------------------------

    async def fork(self, caller: Caller, sandbox_id: str, body: dict[str, Any]) -> list[SandboxRecord]:
        rec = await self.get(caller, sandbox_id)
        count = body.get("count") or 1
        if not isinstance(count, int) or not 1 <= count <= 20:
            raise E2bApiError(400, "count must be between 1 and 20")
        forks = []
        for _ in range(count):
            child_id = "e2b" + secrets.token_hex(10)
            self.reach(caller, child_id)
            child = self._new_record(
                caller,
                child_id,
                rec.template_id,
                {
                    "timeout": body.get("timeout"),
                    "metadata": rec.metadata,
                    "envVars": rec.envs,
                    "network": rec.egress.as_json(),
                },
            )
            src = await self.ctx.namespaces.ensure(caller.workspace_id, sandbox_id, caller.actor)
            dst = await self.ctx.namespaces.ensure(caller.workspace_id, child_id, caller.actor)
            if child.egress.blocked:  # a fork is under its parent's rules from the start
                await self.ctx.runtime.set_egress(dst, child.egress.blocked, dns=child.egress.dns)
            locks = self.ctx.files.locks
            # Exclusive, as a snapshot takes it: the copy is one point in time of the source.
            async with (
                locks.exclusive(caller.workspace_id, sandbox_id),
                locks.exclusive(caller.workspace_id, child_id),
            ):
                tarball = self.ctx.runtime.export_tar(src)
                try:
                    await self.ctx.runtime.import_tar(dst, tarball)
                finally:
                    await _aclose(tarball)
            await asyncio.to_thread(self.records.insert, child)
            forks.append(child)
        return forks

    async def create_snapshot(self, caller: Caller, sandbox_id: str, name: str | None) -> str:
        await self.get(caller, sandbox_id)
        snap = await self.ctx.snapshots.create(caller.workspace_id, sandbox_id, name, caller.actor)
        return snap.snapshot_id

    async def list_snapshots(self, caller: Caller, sandbox_id: str | None) -> list[tuple[str, str | None]]:
        if caller.namespace is not None:
            if sandbox_id is not None and sandbox_id != caller.namespace:
                return []
            sandbox_id = caller.namespace
        return await asyncio.to_thread(self.records.snapshot_ids, caller.workspace_id, sandbox_id)

    async def delete_snapshot(self, caller: Caller, snapshot_id: str) -> bool:
        namespace = await asyncio.to_thread(self.records.snapshot_namespace, caller.workspace_id, snapshot_id)
        if namespace is None:
            return False
        self.reach(caller, namespace)
        await self.ctx.snapshots.delete(caller.workspace_id, namespace, snapshot_id, caller.actor)
        return True

    async def _restore_into(self, caller: Caller, sandbox_id: str, source: str, snapshot_id: str) -> None:
        self.reach(caller, source)
        snap = await self.ctx.snapshots.get(caller.workspace_id, source, snapshot_id)
        dst = await self.ctx.namespaces.ensure(caller.workspace_id, sandbox_id, caller.actor)
        reader = await self.ctx.snapshot_store.open(snap.storage_key)
        chunks = reader.chunks()
        try:
            async with self.ctx.files.locks.exclusive(caller.workspace_id, sandbox_id):
                await self.ctx.runtime.import_tar(dst, chunks)
        finally:
            await _aclose(chunks)
            await reader.aclose()

    # -- expiry -------------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Pause (auto-pause) or wipe the E2B-made sandboxes whose timeout has passed, and free
        the namespaces of kills a crash cut off between the tombstone and the deletion."""
        for killed in await asyncio.to_thread(self.records.killed_with_namespace):
            try:
                await self._free(killed)
            except Exception:
                log.exception("e2b: freeing killed sandbox %s failed", killed.sandbox_id)
        for rec in await asyncio.to_thread(self.records.expired, time.time()):
            try:
                if rec.auto_pause:
                    await asyncio.to_thread(self.records.set, rec.sandbox_id, state="paused")
                    await self._halt(rec)
                else:
                    await self._end(rec)
            except Exception:
                log.exception("e2b: ending expired sandbox %s failed", rec.sandbox_id)

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.settings.e2b_sweep_interval_s)
            await self.sweep()


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
