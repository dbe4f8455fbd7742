"""``--lock-backend=lease``: one coordination.k8s.io/v1 Lease per lock slot.

Users asked for a lock on its own object instead of an annotation on the
DaemonSet (kured issue #25): Leases are what Kubernetes itself uses for
leader election, they are cheap to watch, and writing them does not touch
the DaemonSet. Concurrency N means N Leases named ``<ds-name>-lock-<i>``;
a node holds the lock when it is the ``holderIdentity`` of one of them.

A holder renews its Lease while its daemon runs. A Lease that is no longer
renewed has expired, but expiry alone never frees a slot: the same rules as
for the annotation backend decide (:func:`kured.policy.reclaim_reason`), so a
node that is mid-reboot keeps its slot while its daemon is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta

from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta

from kured.kube import Conflict, DaemonSet, Kube, Lease
from kured.lock import MAX_WRITE_ATTEMPTS, LockChange, LockView
from kured.lockformat import LockEntry, LockRecord, group_slug

log = logging.getLogger("kured.lease")

LOCK_LABEL = "kured.dev/lock"
GROUP_LABEL = "kured.dev/lock-group"
UNSCHEDULABLE_ANNOTATION = "kured.dev/unschedulable-before"
DEFAULT_DURATION = timedelta(seconds=60)


class LeaseLock:
    """The lock as ``concurrency`` Leases in ``--ds-namespace``."""

    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        node_id: str,
        concurrency: int,
        duration: timedelta,
        group: str = "",
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name
        self._node_id = node_id
        self._concurrency = concurrency
        self._duration = duration if duration > timedelta(0) else DEFAULT_DURATION
        self._slug = group_slug(group)
        self._labels = {LOCK_LABEL: name, GROUP_LABEL: self._slug}

    def slot_name(self, index: int) -> str:
        group = f"{self._slug}-" if self._slug else ""
        return f"{self._name}-lock-{group}{index}"

    async def all_holders(self, ds: DaemonSet) -> list[str]:
        """Holders of every group's Leases (``--lock-group-label``), for ``--max-unavailable``."""
        every_group = {LOCK_LABEL: self._name}
        return [
            h
            for h in map(holder_of, await self._kube.list_leases(self._namespace, every_group))
            if h
        ]

    async def snapshot(self, ds: DaemonSet) -> LockView:
        """The holders, one entry per held Lease (the DaemonSet plays no part here)."""
        leases = await self._kube.list_leases(self._namespace, self._labels)
        return LockView(
            LockRecord(tuple(lease_entry(lease) for lease in leases if holder_of(lease))), ""
        )

    async def acquire(
        self, unschedulable_before: bool, reclaim: frozenset[str] = frozenset()
    ) -> tuple[bool, list[str]]:
        """Become the holder of a free slot (or of a stale holder's, named in ``reclaim``)."""
        for _attempt in range(MAX_WRITE_ATTEMPTS):
            leases = {
                lease_name(lease): lease
                for lease in await self._kube.list_leases(self._namespace, self._labels)
            }
            holders = [h for h in map(holder_of, leases.values()) if h]
            if self._node_id in holders:
                return True, holders
            if len([h for h in holders if h not in reclaim]) >= self._concurrency:
                return False, holders
            free = next(
                (
                    i
                    for i in range(self._concurrency)
                    if holder_of(leases.get(self.slot_name(i))) in ("", *reclaim)
                ),
                None,
            )
            if free is None:  # the holders sit in slots beyond a lowered --concurrency
                return False, holders
            try:
                await self._take(leases.get(self.slot_name(free)), free, unschedulable_before)
                return True, [*(h for h in holders if h not in reclaim), self._node_id]
            except Conflict:
                log.debug("lease slot %d taken concurrently; re-reading", free)
        raise TimeoutError(f"lease writes kept conflicting after {MAX_WRITE_ATTEMPTS} attempts")

    async def release(self, node_id: str | None = None) -> bool:
        """Clear the holder of this node's Lease (or a stale holder's)."""
        return await release_leases(
            self._kube, self._namespace, self._labels, node_id or self._node_id
        )

    async def rebuild(self, ds: DaemonSet, holders: Mapping[str, bool]) -> bool:
        """A Lease is never unreadable: there is nothing to rebuild."""
        return False

    async def keep_alive(self) -> None:
        """Renew this node's Lease while the daemon runs (a third of its duration apart)."""
        while True:
            await asyncio.sleep(self._duration.total_seconds() / 3)
            try:
                await self._renew()
            except Exception as err:  # the next renewal tries again
                log.warning("Could not renew the lock lease: %s", err)

    async def changes(self) -> AsyncIterator[LockChange]:
        """Each change of who holds which slot (renewals, every few seconds, are not news).

        Every group's slots, not only this node's group's: ``--max-unavailable`` counts the
        nodes of all groups, so a release elsewhere can be this node's turn (the annotation
        backend's DaemonSet watch sees every group's annotation likewise). A slot is free
        for this node only in its own group.
        """
        holders: dict[str, str] = {}
        ours: set[str] = set()  # this group's Leases
        every_group = {LOCK_LABEL: self._name}
        async for event, lease in self._kube.watch_leases(self._namespace, every_group):
            name, holder = lease_name(lease), "" if event == "DELETED" else holder_of(lease)
            labels = (lease.metadata.labels if lease.metadata else None) or {}
            if labels.get(GROUP_LABEL) == self._slug:
                ours.add(name)
            if holders.get(name) != holder:
                holders[name] = holder
                held = [holders[n] for n in ours if holders.get(n)]
                yield LockChange(len(held) < self._concurrency, holders=frozenset(held))

    async def _renew(self) -> None:
        for lease in await self._kube.list_leases(self._namespace, self._labels):
            if holder_of(lease) == self._node_id and lease.spec is not None:
                lease.spec.renewTime = datetime.now(UTC)
                await self._kube.replace_lease(lease)

    async def _take(self, lease: Lease | None, index: int, unschedulable_before: bool) -> None:
        now = datetime.now(UTC)
        spec = LeaseSpec(
            holderIdentity=self._node_id,
            leaseDurationSeconds=int(self._duration.total_seconds()),
            acquireTime=now,
            renewTime=now,
            leaseTransitions=((lease.spec.leaseTransitions or 0) + 1)
            if lease and lease.spec
            else 0,
        )
        annotations = {UNSCHEDULABLE_ANNOTATION: str(unschedulable_before).lower()}
        if lease is None:
            meta = ObjectMeta(
                name=self.slot_name(index),
                namespace=self._namespace,
                labels=self._labels,
                annotations=annotations,
            )
            await self._kube.create_lease(Lease(metadata=meta, spec=spec))
            return
        assert lease.metadata is not None
        lease.metadata.annotations = (lease.metadata.annotations or {}) | annotations
        lease.spec = spec
        await self._kube.replace_lease(lease)


async def release_leases(
    kube: Kube, namespace: str, labels: Mapping[str, str], holder: str
) -> bool:
    """Clear ``holder`` from the Leases ``labels`` select; False when it held none.

    Each write is guarded by the resourceVersion just read, so a Lease that changed hands
    meanwhile is re-read rather than taken from its new holder. ``kuredctl unlock`` frees
    a node's slot with this too, across every group (``{LOCK_LABEL: <ds-name>}``).
    """
    for _attempt in range(MAX_WRITE_ATTEMPTS):
        held = [
            lease
            for lease in await kube.list_leases(namespace, labels)
            if holder_of(lease) == holder and lease.spec is not None
        ]
        if not held:
            return False
        for lease in held:
            assert lease.spec is not None
            lease.spec.holderIdentity = None
            lease.spec.renewTime = None
        try:
            for lease in held:
                await kube.replace_lease(lease)
            return True
        except Conflict:
            log.debug("lease changed while releasing; re-reading")
    raise TimeoutError(f"lease writes kept conflicting after {MAX_WRITE_ATTEMPTS} attempts")


def lease_name(lease: Lease) -> str:
    return (lease.metadata.name if lease.metadata else None) or ""


def holder_of(lease: Lease | None) -> str:
    return (lease.spec.holderIdentity if lease and lease.spec else None) or ""


def lease_entry(lease: Lease) -> LockEntry:
    """A held Lease in the lock's common shape: renewTime + duration is its TTL."""
    spec = lease.spec
    assert spec is not None
    annotations = (lease.metadata.annotations if lease.metadata else None) or {}
    return LockEntry(
        node_id=spec.holderIdentity or "",
        created=spec.renewTime,
        ttl=timedelta(seconds=spec.leaseDurationSeconds or 0),
        metadata={"unschedulable": annotations.get(UNSCHEDULABLE_ANNOTATION) == "true"},
    )
