"""What wakes the agent before ``--period``: watches of the lock, of the Node's and the
DaemonSet's pause, and of the sentinel (inotify, or a stat every few seconds), each watched
again after it ends or fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import zlib
from collections.abc import AsyncIterator, Callable
from enum import StrEnum
from typing import TypeVar

from kured.facts import (
    annotations_of,
)
from kured.filewatch import FileWatch
from kured.kube import ApiError, DaemonSet, Node
from kured.lock import LockChange
from kured.phases.locking import LockPhase
from kured.policy import (
    HOLDER_LABEL,
    PAUSED_ANNOTATION,
    Step,
)

log = logging.getLogger("kured")
T = TypeVar("T")
SENTINEL_POLL_SECONDS = 2.0
WATCH_RETRY_MAX_SECONDS = 30.0
# Steps after which a lock change is no news: nothing to do with the lock (idle, waiting
# for the window, the reboot-loop guard, a dry run) or the host is going down.
LOCK_BLIND = frozenset({Step.NOTHING, Step.LOOP_GUARD, Step.DRY_RUN, Step.REBOOT})
# Steps after which only a change that frees a slot is news.
WANTS_A_SLOT = frozenset({Step.WAIT_FOR_LOCK, Step.ACQUIRE_LOCK})
# Blocks (the blocked metric's kinds) that no lock change can lift: pods, alerts, queries.
# A pause is lifted only by a change of the pause itself; any other block (--max-unavailable,
# which counts every group's holders) may be lifted by a release, so it wakes.
BEYOND_THE_LOCK = frozenset({"pods", "prometheus", "query"})
# About this many nodes of a fleet watch the lock holders' Nodes (see watches_holders).
HOLDER_WATCHERS = 16


def watches_holders(node_id: str, fleet_size: int) -> bool:
    """Whether this node is one of the about :data:`HOLDER_WATCHERS` nodes of a fleet of
    ``fleet_size`` that watch the lock holders' Nodes (each node of a fleet that small, or
    of one not yet counted: 0).

    A stable hash of the name (the same in every process, every restart) picks them with no
    coordination; which ones does not matter, as any of them frees a deleted holder's slot."""
    share = max(1, math.ceil(fleet_size / HOLDER_WATCHERS))
    return zlib.crc32(node_id.encode()) % share == 0


class Wake(StrEnum):
    """What a lock change means to an agent."""

    NO = "no"  # no news after the last step
    NOW = "now"  # evaluate at once
    SPREAD = "spread"  # a slot freed: evaluate after a random part of the spread
    CANCEL = "cancel"  # every slot is taken again: a pending spread wake-up is moot


def lock_news(step: Step | None, blocked: str, change: LockChange) -> Wake:
    """What ``change`` means after the last decision's ``step`` (None: still deciding) and,
    for :data:`Step.BLOCKED`, the ``blocked`` kind ("pause", "max-unavailable", "pods", ...).

    Pure, so that the promise is checked over every case (tests/unit/test_agent_wake.py):
    a change that could let the node act after its last decision always wakes it.
    """
    if step is None:
        return Wake.NOW
    if step in LOCK_BLIND:
        return Wake.NO
    if step in WANTS_A_SLOT:
        return Wake.SPREAD if change.slot_free else Wake.CANCEL
    if step is Step.BLOCKED and blocked == "pause":
        return Wake.NOW if change.pause_changed else Wake.NO
    if step is Step.BLOCKED and blocked in BEYOND_THE_LOCK:
        return Wake.NO
    return Wake.NOW


class Wakeups(LockPhase):
    """The watches that wake the agent's loop."""

    async def _watch_lock(self) -> None:
        """Wake the loop when the lock changes in a way that matters to the last step."""
        await self._follow("the lock", self.lock.changes, self._on_lock_change)

    async def _watch_holders(self) -> None:
        """When a holder's Node is deleted, its slot may be taken at once
        (:func:`kured.policy.reclaim_reason`), but the lock itself does not change: the
        agents that watch the Nodes labelled :data:`HOLDER_LABEL` (the few that hold a slot)
        hear of it, and take the slot over or free it for the others.

        Only the few nodes :func:`watches_holders` picks watch (every node of a small fleet):
        a holder's Node changes a dozen times in its reboot, and the API server sends each
        change to every watcher, so with every node watching each hand-off cost N × that."""

        async def holder_nodes() -> AsyncIterator[tuple[str, Node]]:
            async for change in self._kube.watch_nodes({HOLDER_LABEL: "true"}):
                yield change

        watch: asyncio.Task[None] | None = None
        try:
            while True:  # asked again at each evaluation, as the fleet grows or shrinks
                await self._fleet_read.wait()
                self._fleet_read.clear()
                picked = watches_holders(self.node_id, self._fleet_size)
                if picked and watch is None:
                    follow = self._follow(
                        "the lock holders' Nodes", holder_nodes, self._on_holder_node
                    )
                    watch = asyncio.get_running_loop().create_task(follow)
                elif not picked and watch is not None:
                    watch.cancel()
                    watch = None
        finally:
            if watch is not None:
                watch.cancel()

    def _on_holder_node(self, change: tuple[str, Node]) -> None:
        """A Node that leaves the holders' watch was deleted or released its slot (its label
        went). A node waiting for a slot of that holder's lock wakes as for a freed slot;
        any other frees the slot if the holder is gone (:meth:`_free_slot_of_deleted`)."""
        event, node = change
        if event != "DELETED":
            return
        name = node.metadata.name if node.metadata else None
        if name in self._lock_holders and self._last_step in WANTS_A_SLOT:
            self._act_on(Wake.SPREAD)
        else:
            task = asyncio.get_running_loop().create_task(self._free_slot_of_deleted(node))
            self._freeing.add(task)
            task.add_done_callback(self._freeing.discard)

    async def _watch_pause(
        self, what: str, objects: Callable[[], AsyncIterator[Node | DaemonSet]]
    ) -> None:
        """Wake the loop when ``kured.dev/paused`` changes on ``what``, so that a resume (or
        a pause) takes effect at once rather than at the next ``--period``."""
        last: list[str | None] = []  # the value last seen, kept across reconnects

        def on_change(obj: Node | DaemonSet) -> None:
            value = annotations_of(obj).get(PAUSED_ANNOTATION)
            if last and last[0] != value and self._last_step is not Step.REBOOT:
                self._wake.set()
            last[:] = [value]

        await self._follow(what, objects, on_change)

    async def _watch_own_node(self) -> AsyncIterator[Node]:
        """This node's changes, for its pause; the same watch wakes the loop when the
        ``--lock-group-label`` label moves the node to another group (once per move, and
        not while the host goes down: see :meth:`_follow_lock_group`)."""
        async for _event, node in self._kube.watch_node(self.node_id):
            group = self._group_of(node)
            if group != self._group_seen and self._last_step is not Step.REBOOT:
                self._group_seen = group
                if group != self._lock_group:
                    self._wake.set()
            yield node

    async def _watch_daemonset(self) -> AsyncIterator[DaemonSet]:
        config = self.config
        async for _event, ds in self._kube.watch_daemonset(config.ds_namespace, config.ds_name):
            yield ds

    async def _follow(
        self, what: str, changes: Callable[[], AsyncIterator[T]], on_change: Callable[[T], None]
    ) -> None:
        """Feed each change a watch delivers to ``on_change``, watching again after the
        server ends a watch or it fails (backing off); give up where RBAC forbids it, leaving
        the waking to ``--period``."""
        delay = 1.0
        while True:
            try:
                async for change in changes():
                    delay = 1.0
                    on_change(change)
            except ApiError as err:
                if err.status.code == 403:
                    log.warning("Not allowed to watch %s (%s); polling every --period", what, err)
                    return
                log.debug("watch of %s failed: %s", what, err)
            except Exception as err:
                log.debug("watch of %s failed: %s", what, err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, WATCH_RETRY_MAX_SECONDS)

    def _on_lock_change(self, change: LockChange) -> None:
        """Wake the loop if the change matters after the last step.

        A slot that frees up is news to every node waiting for one, and all of them reading
        the lock and writing it at once is a thundering herd: one wins, the others get 409
        Conflict and read again, on every hand-off. So a waiting node wakes at a random
        moment of a spread that grows with the fleet (:func:`slot_spread`): the first of W
        waiters wakes about spread/W after the slot freed and takes it, and the others, told
        by the watch that every slot is taken again before their turn, do not wake at all.
        """
        self._lock_holders = change.holders
        self._act_on(lock_news(self._last_step, self._last_block, change))

    def _act_on(self, news: Wake) -> None:
        if news is Wake.NOW:
            self._wake.set()
        elif news is Wake.CANCEL:
            if self._spread_wake:
                self._spread_wake.cancel()
            self._spread_wake = None
        elif news is Wake.SPREAD and self._spread_wake is None:
            spread = random.uniform(0, self._slot_spread)
            self._spread_wake = asyncio.get_running_loop().call_later(spread, self._spread_over)

    def _spread_over(self) -> None:
        self._spread_wake = None
        self._wake.set()

    async def _watch_sentinel(self) -> None:
        """Wake the loop when the sentinel file appears or goes: inotify on its directory
        tells at once and costs nothing meanwhile; without inotify, a stat every few seconds."""
        try:
            with FileWatch(self.config.reboot_sentinel) as watch:
                await self._check_sentinel()  # it may have changed before the watch began
                async for _change in watch.changes():
                    await self._check_sentinel()
        except OSError as err:
            log.info("Checking the sentinel every %gs (no inotify: %s)", SENTINEL_POLL_SECONDS, err)
        while True:
            await asyncio.sleep(SENTINEL_POLL_SECONDS)
            await self._check_sentinel()

    async def _check_sentinel(self) -> None:
        with contextlib.suppress(Exception):
            if await self._host.reboot_required() != self._last_sentinel:
                self._wake.set()
