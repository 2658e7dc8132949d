"""Agent channels opened to warm-pool pods before a namespace claims one.

A claimed pool pod is Ready at once, but the namespace's first call still paid for an exec
session and the agent's start in the pod (100-250 ms on a two-core node, most of the first
call). The pool's pods carry nothing of a tenant until the claim, and the agent's command takes
no argument, so the channel can be opened ahead: a claim keeps the pod's name, and the first
call takes the channel that waits for that name.

Every API replica keeps its own (up to ``k8s_pool_channels``); a channel whose pod left the pool
and was not taken here soon after (another replica served the claim) is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from trove_api.logs import detached_task
from trove_api.runtimes.kubernetes.kubeapi import KubeApi, Manifest
from trove_api.runtimes.kubernetes.podexec import WarmChannel
from trove_core.crd import LABEL_COMPONENT, LABEL_POOL, pool_claim_order

log = logging.getLogger(__name__)

POOL_SELECTOR = f"{LABEL_POOL},{LABEL_COMPONENT}=sandbox"
# How long a channel whose pod was just claimed waits to be taken by this replica.
TAKE_GRACE_S = 30.0
WATCH_S = 240.0
RETRY_S = 5.0


def is_ready(pod: Manifest) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class PoolChannels:
    def __init__(self, api: KubeApi, limit: int) -> None:
        self.api = api
        self.limit = limit
        self._members: dict[str, Manifest] = {}  # the pool's waiting pods, as last seen
        self._ready: dict[str, WarmChannel] = {}
        self._opening: set[str] = set()
        self._refused: set[str] = set()  # pods whose image has no agent, or that never answered
        self._left: dict[str, float] = {}  # pod -> when it left the pool (claimed or deleted)
        self._follower: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self.limit and (self._follower is None or self._follower.done()):
            self._follower = detached_task(self._follow(), name="trove-k8s-pool-channels")

    def take(self, pod: str) -> WarmChannel | None:
        """The channel opened to ``pod`` while it waited in the pool, if it still stands."""
        channel = self._ready.pop(pod, None)
        self._left.pop(pod, None)
        return channel if channel is not None and channel.open else None

    async def expire(self) -> None:
        """Close the channels of pods that left the pool and were not taken here in time."""
        cutoff = time.monotonic() - TAKE_GRACE_S
        stale = [pod for pod, channel in self._ready.items() if not channel.open]
        stale += [pod for pod, left in self._left.items() if left < cutoff]
        for pod in set(stale):
            self._left.pop(pod, None)
            channel = self._ready.pop(pod, None)
            if channel is not None:
                await channel.close()

    async def _follow(self) -> None:
        while True:
            try:
                pods, version = await self.api.list_pods(POOL_SELECTOR)
                self._members = {str(p["metadata"]["name"]): p for p in pods}
                for name in (set(self._ready) | self._opening) - set(self._members):
                    self._left.setdefault(name, time.monotonic())
                self._rebalance()
                async for event in self.api.watch_pods(POOL_SELECTOR, version, WATCH_S):
                    self._on_event(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("following the warm pool's pods failed; again in %gs", RETRY_S, exc_info=True)
                await asyncio.sleep(RETRY_S)

    def _on_event(self, event: dict[str, Any]) -> None:
        pod = event.get("object") or {}
        name = str((pod.get("metadata") or {}).get("name", ""))
        if event.get("type") == "DELETED":  # claimed (the pool label went) or gone
            self._members.pop(name, None)
            if name in self._ready or name in self._opening:
                self._left.setdefault(name, time.monotonic())
            self._refused.discard(name)
        elif event.get("type") in ("ADDED", "MODIFIED"):
            self._members[name] = pod
        self._rebalance()

    def _rebalance(self) -> None:
        """Channels to the members the next claims will take (the operator's order), no others."""
        ready = sorted((p for p in self._members.values() if is_ready(p)), key=pool_claim_order)
        wanted = [n for n in (str(p["metadata"]["name"]) for p in ready) if n not in self._refused]
        wanted = wanted[: self.limit]
        for name in wanted:
            if name not in self._ready and name not in self._opening:
                self._opening.add(name)
                self._spawn(self._open(name), f"trove-k8s-pool-channel-{name}")
        for name in [n for n in self._ready if n in self._members and n not in wanted]:
            self._spawn(self._ready.pop(name).close(), f"trove-k8s-pool-channel-close-{name}")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = detached_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, pod: str) -> None:
        try:
            channel = await WarmChannel.connect(self.api, pod)
        except Exception:
            # An agentless image, or a pod gone meanwhile: its first call opens its own.
            self._refused.add(pod)
            log.info("no agent channel ahead for pool pod %s", pod, exc_info=True)
            return
        finally:
            self._opening.discard(pod)
        self._ready[pod] = channel

    async def aclose(self) -> None:
        tasks = [t for t in (self._follower, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        channels = list(self._ready.values())
        self._ready.clear()
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)
