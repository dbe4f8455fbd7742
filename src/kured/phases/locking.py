"""The lock phase: take a slot (over stale holders), give it back, and keep the lock sound
(free the slots of deleted nodes, rebuild an unreadable lock, ``--max-unavailable``)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from kured.capacity import over_budget
from kured.events import Reason
from kured.facts import (
    annotations_of,
    holder_facts,
    labels,
    node_state,
    witnessed,
)
from kured.kube import DaemonSet, Node
from kured.lock import Lock, LockView
from kured.phases.base import (
    REBOOT_IN_PROGRESS_ANNOTATION,
    AgentBase,
    Seen,
    compact_json,
    make_lock,
    now_rfc3339,
    sleep_for,
)
from kured.policy import (
    PROGRESS_ANNOTATION,
    STATUS_ANNOTATION,
    Decision,
    Phase,
    Progress,
    Step,
    reclaim_reason,
)

log = logging.getLogger("kured")
# How long after the waiters' spread a deleted holder's slot is freed by a node that does
# not take it over itself (a waiter that woke has taken it by then).
FREE_AFTER_SPREAD_SECONDS = 1.0


class LockPhase(AgentBase):
    """Taking, giving back and repairing the reboot lock."""

    async def _acquire(self, seen: Seen) -> float:
        log.info("Reboot required")
        for holder, why in seen.stale.items():
            log.warning("Releasing stale lock of %s: %s", holder, why)
        reclaim = frozenset(seen.stale)
        acquired, holders = await self.lock.acquire(seen.obs.node_unschedulable, reclaim)
        if not acquired:
            log.info("Lock already held: %s", ", ".join(holders))
            await self._set_taint(seen.node, True)
            return self._period()
        log.info("Acquired reboot lock")
        self._metrics.stale_locks.inc(len(reclaim))
        if self._wanting_since is not None:
            self._metrics.lock_latency.observe(time.monotonic() - self._wanting_since)
            self._wanting_since = None
        await self._events.record(seen.node, Reason.LOCK_ACQUIRED, "Acquired reboot lock")
        return 0

    async def _release(self, decision: Decision, seen: Seen) -> float:
        """RELEASE after a healthy reboot, or ABANDON: free the slot, back to idle."""
        obs = seen.obs
        if decision.step is Step.ABANDON:
            log.info("Giving up the reboot: %s", decision.reason)
            await self._uncordon(decision, seen)
        idle = Progress(consecutive_reboots=obs.progress.consecutive_reboots)
        changes: dict[str, str | None] = {
            PROGRESS_ANNOTATION: idle.to_json() if idle.consecutive_reboots else None
        }
        if self.config.annotate_nodes:
            changes[REBOOT_IN_PROGRESS_ANNOTATION] = None
        if decision.step is Step.RELEASE:
            self._status = self._status | {"lastReboot": now_rfc3339()}
            changes[STATUS_ANNOTATION] = compact_json(self._status)
            self._metrics.reboots.inc()
            self._metrics.last_reboot.set_to_current_time()
        await self._annotate(changes)
        if obs.holds_lock:
            await sleep_for(self.config.lock_release_delay.total_seconds())
            log.info("Releasing lock")
            await self.lock.release()
            await self._events.record(seen.node, Reason.LOCK_RELEASED, "Released reboot lock")
        # After the release (seen.node may predate the label): a waiting node that sees the
        # label go (a DELETED event of its watch) already knows from the lock that this node
        # holds no slot, so it does not take it for a deleted holder.
        await self._drop_holder_label()
        return 0

    async def _free_deleted_holders(self, view: LockView, lock: Lock | None = None) -> None:
        """A holder whose Node is gone never releases its slot, and a node that needs the
        lock only reclaims it when every slot is taken: idle agents free such slots (of
        ``lock``, this node's own by default), so a deleted node's lock does not outlive it."""
        lock = lock or self.lock
        bound = self.config.stale_lock_timeout.total_seconds()
        for entry in view.record.entries:
            if entry.node_id == self.node_id or await self._kube.get_node(entry.node_id):
                continue
            reason = reclaim_reason(holder_facts(entry, None, datetime.now(UTC)), bound)
            if reason:
                log.warning("Releasing stale lock of %s: %s", entry.node_id, reason)
                await lock.release(entry.node_id)

    async def _free_slot_of_deleted(self, node: Node) -> None:
        """A lock holder's Node left the holders' watch, and no waiting node here takes its
        slot over: once the waiters' spread is past (one that wakes takes the slot itself,
        saying why), free it if the Node is really gone (a release drops the label: that
        leaves the watch too) and the slot still taken, in whichever group's lock it is."""
        name = node.metadata.name if node.metadata else None
        group = self._group_of(node)
        if not name or (group == self._lock_group and name not in self._lock_holders):
            return  # released: the lock watch said so before the label went
        await asyncio.sleep(self._slot_spread + FREE_AFTER_SPREAD_SECONDS)
        try:
            if await self._kube.get_node(name):
                return
            lock = (
                self.lock
                if group == self._lock_group
                else make_lock(self.config, self._kube, group)
            )
            ds = await self._kube.get_daemonset(self.config.ds_namespace, self.config.ds_name)
            await self._free_deleted_holders(await lock.snapshot(ds), lock)
        except Exception as err:  # the next --period's evaluation frees it then
            log.warning("Could not free the lock of deleted node %s: %s", name, err)

    def _group_of(self, node: Node) -> str:
        """The node's ``--lock-group-label`` value ("" without the flag or the label)."""
        label = self.config.lock_group_label
        return labels(node).get(label, "") if label else ""

    def _join_group(self, group: str) -> None:
        log.info("Lock group: %s=%s", self.config.lock_group_label, group or "(none)")
        self.lock = make_lock(self.config, self._kube, group)
        self._lock_group = self._group_seen = group

    async def _follow_lock_group(self, node: Node, ds: DaemonSet, progress: Progress) -> None:
        """The node's group label changed: take the new group's lock, once this node is
        between reboots and holds no slot of the old one (a slot it holds stays its own
        until released, and a reboot under way finishes under the lock it began with)."""
        group = self._group_of(node)
        if group == self._lock_group or progress.phase is not Phase.IDLE:
            return
        if (await self.lock.snapshot(ds)).record.entry_of(self.node_id) is None:
            self._join_group(group)

    async def _over_budget(self, ds: DaemonSet, *, holding: bool) -> str:
        """``--max-unavailable``: why this node may not go down now ("" = it may)."""
        budget = self.config.max_unavailable
        if budget is None:
            return ""
        nodes = [node_state(n) for n in await self._kube.list_nodes()]
        holders = await self.lock.all_holders(ds)
        return over_budget(budget, nodes, self.node_id, holders, holding)

    async def _rebuild_lock(self, ds: DaemonSet, node: Node) -> tuple[DaemonSet, LockView]:
        """Garbage in the lock would stop every reboot for good: rebuild it from the progress
        records of this lock's nodes (a node draining, rebooting or gating holds a slot).

        The nodes are read after the garbage was, and the record is written only over that
        version of it, so a node that records a drain after we looked at it either finds
        itself in the rebuilt lock or sees garbage again (see :meth:`_drain`).
        """
        holders = {}
        for name in await self._lock_members(ds):
            member = node if name == self.node_id else await self._kube.get_node(name)
            if member is None or not self._same_group(member, node):
                continue
            progress = Progress.from_json(annotations_of(member).get(PROGRESS_ANNOTATION))
            if progress.phase is not Phase.IDLE:
                holders[name] = progress.unschedulable_before
        if await self.lock.rebuild(ds, holders):
            named = ", ".join(holders) or "nobody"
            log.warning("Rebuilt the lock from the nodes' progress records: held by %s", named)
        ds = await self._kube.get_daemonset(self.config.ds_namespace, self.config.ds_name)
        return ds, await self.lock.snapshot(ds)

    async def _lock_members(self, ds: DaemonSet) -> set[str]:
        """The nodes this kured DaemonSet runs on (and this one): those that share its lock."""
        uid = ds.metadata.uid if ds.metadata else None
        pods = await self._kube.list_pods(namespace=self.config.ds_namespace)
        owned = {
            pod.spec.nodeName
            for pod in pods
            if pod.spec
            and pod.spec.nodeName
            and pod.metadata
            and any(ref.uid == uid for ref in pod.metadata.ownerReferences or [])
        }
        return owned | {self.node_id}

    def _same_group(self, other: Node, mine: Node) -> bool:
        """``--lock-group-label``: only nodes of this node's group share its lock."""
        label = self.config.lock_group_label
        return not label or labels(other).get(label) == labels(mine).get(label)

    async def _stale_holders(self, lock: LockView, now: datetime) -> dict[str, str]:
        """Holders whose slot may be taken over, with why (only asked when every slot is taken)."""
        if len(lock.record.entries) < self.config.concurrency:
            return {}
        bound = self.config.stale_lock_timeout.total_seconds()
        stale, seen = {}, dict[tuple[object, ...], float]()
        for entry in lock.record.entries:
            holder = await self._kube.get_node(entry.node_id)
            facts = holder_facts(entry, holder, now)
            key = (entry.node_id, entry.created, facts.ready, facts.phase, facts.boot_changed)
            seen[key] = self._holders_seen.get(key, time.monotonic())
            reason = reclaim_reason(witnessed(facts, entry, time.monotonic() - seen[key]), bound)
            if reason:
                stale[entry.node_id] = reason
        self._holders_seen = seen
        return stale
