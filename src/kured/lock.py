"""The cluster-wide reboot lock on kured's DaemonSet: read, watched and written.

The value is Go kured's annotation (:mod:`kured.lockformat`). :class:`DaemonSetLock`
writes it with a JSON Patch whose ``test`` operation checks the annotation's value as it
was read, so a write conflicts only with another write of the same lock: not with the
DaemonSet controller's status updates, nor with the other lock groups' annotations on
the same object, which a resourceVersion-guarded update would also lose to. Where RBAC
grants only Go kured's ``update`` (no ``patch``), it falls back to that update.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from kured.kube import ApiError, Conflict, DaemonSet, Kube
from kured.lockformat import (
    LockEntry,
    LockFormatError,
    LockRecord,
    group_annotation,
    parse,
    render,
)
from kured.policy import PAUSED_ANNOTATION

log = logging.getLogger("kured.lock")

MAX_WRITE_ATTEMPTS = 20


class Lock(Protocol):
    """What the agent needs of a lock backend (DaemonSet annotation or Leases)."""

    async def snapshot(self, ds: DaemonSet) -> LockView: ...

    async def all_holders(self, ds: DaemonSet) -> list[str]: ...

    async def acquire(
        self, unschedulable_before: bool, reclaim: frozenset[str] = frozenset()
    ) -> tuple[bool, list[str]]: ...

    async def release(self, node_id: str | None = None) -> bool: ...

    async def rebuild(self, ds: DaemonSet, holders: Mapping[str, bool]) -> bool: ...

    async def keep_alive(self) -> None: ...

    def changes(self) -> AsyncIterator[LockChange]: ...


@dataclass(frozen=True)
class LockChange:
    """One change of the lock, as its watch delivered it."""

    # Fewer holders than slots in this node's group: a node waiting for one may get it
    # now. A change that leaves every slot taken is no news to a waiting node (only time
    # makes a holder stale), so the agent does not wake for it: with 200 nodes waiting,
    # each hand-off would otherwise make every one of them read its Node and the lock twice.
    slot_free: bool
    # ``kured.dev/paused`` on the DaemonSet changed with it (the annotation backend's watch
    # sees both): news to a paused node, which a hand-off alone does not concern.
    pause_changed: bool = False
    # Who holds this node's group's slots now (a waiting node hears of their Nodes' deletion).
    holders: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LockView:
    """The lock as read from the cluster at one moment."""

    record: LockRecord
    resource_version: str
    unreadable: str = ""  # why the annotation could not be parsed, if it could not
    text: str | None = None  # the annotation's value as read (None: absent)


class DaemonSetLock:
    """The lock on ``--ds-namespace/--ds-name``, read and written through :mod:`kured.kube`."""

    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        annotation: str,
        node_id: str,
        ttl: timedelta,
        concurrency: int,
        group: str = "",
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name
        self._base = annotation
        self.annotation = group_annotation(annotation, group)
        # ``kured.dev/paused`` as the lock watch last saw it (empty: not seen yet).
        self._pause_seen: list[str | None] = []
        self._node_id = node_id
        self._ttl = ttl
        self._concurrency = concurrency
        self._observed: DaemonSet | None = None  # the last snapshot, for the next write
        self._may_patch = True  # until RBAC says otherwise (Go kured's grants only update)

    async def snapshot(self, ds: DaemonSet) -> LockView:
        """The lock as carried by an already-read DaemonSet (saves a GET)."""
        self._observed = ds
        return _view(ds, self.annotation)

    async def all_holders(self, ds: DaemonSet) -> list[str]:
        """Holders of every group's lock (``--lock-group-label``), for ``--max-unavailable``."""
        annotations = (ds.metadata.annotations if ds.metadata else None) or {}
        holders: list[str] = []
        for key in annotations:
            if key == self._base or key.startswith(f"{self._base}-"):
                holders += _view(ds, key).record.holders()
        return holders

    async def keep_alive(self) -> None:
        """Nothing to renew: an annotation lasts until released (or its TTL)."""

    async def changes(self) -> AsyncIterator[LockChange]:
        """Each change of the lock or pause annotations (not of the DaemonSet's status, which
        moves with every kured pod and would wake every node for nothing)."""
        last: object = None
        pause = self._pause_seen  # kept across reconnects, so a resume meanwhile is news
        async for _event, ds in self._kube.watch_daemonset(self._namespace, self._name):
            annotations = (ds.metadata.annotations if ds.metadata else None) or {}
            relevant = frozenset(
                (key, value)
                for key, value in annotations.items()
                if key == PAUSED_ANNOTATION or key.startswith(self._base)
            )
            if relevant != last:
                last = relevant
                view = _view(ds, self.annotation)  # unreadable: free, it is to be rebuilt
                paused = annotations.get(PAUSED_ANNOTATION)
                pause_changed = bool(pause) and pause[0] != paused
                pause[:] = [paused]
                holders = frozenset(view.record.holders())
                free = len(view.record.entries) < self._concurrency
                yield LockChange(free, pause_changed, holders)

    async def acquire(
        self, unschedulable_before: bool, reclaim: frozenset[str] = frozenset()
    ) -> tuple[bool, list[str]]:
        """Take a slot, dropping the stale holders in ``reclaim``. Returns (acquired, holders)."""

        seen = LockRecord()  # the record the last attempt read

        def change(record: LockRecord, now: datetime) -> LockRecord | None:
            nonlocal seen
            seen = record
            entry = LockEntry(
                node_id=self._node_id,
                created=now,
                ttl=self._ttl,
                metadata={"unschedulable": unschedulable_before},
            )
            return record.acquire(entry, self._concurrency, reclaim)

        record = await self._update(change)
        if record is None:
            return False, seen.holders()
        return True, record.holders()

    async def release(self, node_id: str | None = None) -> bool:
        """Give up this node's slot (or a stale holder's). True if one was freed."""
        target = node_id or self._node_id

        def change(record: LockRecord, now: datetime) -> LockRecord | None:
            if not any(e.node_id == target for e in record.entries):
                return None
            return record.release(target)

        return await self._update(change) is not None

    async def rebuild(self, ds: DaemonSet, holders: Mapping[str, bool]) -> bool:
        """Replace the unreadable lock ``ds`` carries (as read) with a record of ``holders``
        (node → whether it was cordoned before kured took it). Written only over that very
        version of the DaemonSet: if it changed since, nothing is written (False)."""
        if not _view(ds, self.annotation).unreadable:
            return False
        now = datetime.now(UTC)
        entries = tuple(
            LockEntry(node, now, self._ttl, {"unschedulable": before})
            for node, before in sorted(holders.items())
        )
        record = render(LockRecord(entries), self._concurrency)
        try:
            await self._kube.update_daemonset_annotations(ds, {self.annotation: record})
        except Conflict:
            return False
        return True

    async def _update(self, change: Any) -> LockRecord | None:
        """Read-modify-write with resourceVersion; on 409 re-read and try again.

        ``change(record, now)`` returns the new record, or None for "nothing to
        write" (which ends the loop and is returned as None).

        The first attempt writes over the DaemonSet of the last :meth:`snapshot` (the
        agent's observation, moments ago) instead of reading it again: the resourceVersion
        guard turns a stale one into a 409 and a fresh read. Only a fresh read may say that
        there is nothing to write.
        """
        observed, self._observed = self._observed, None
        for attempt in range(MAX_WRITE_ATTEMPTS):
            ds = observed or await self._kube.get_daemonset(self._namespace, self._name)
            fresh, observed = observed is None, None
            view = _view(ds, self.annotation)
            if view.unreadable and fresh:
                raise LockFormatError(view.unreadable)
            now = datetime.now(UTC)
            new: LockRecord | None = None if view.unreadable else change(view.record, now)
            if (new is None or new == view.record) and not fresh:
                continue
            if new is None:
                return None
            if new == view.record:
                return new
            try:
                await self._write(ds, view, render(new, self._concurrency))
                return new
            except Conflict:
                log.debug("lock write conflict (attempt %d); re-reading", attempt + 1)
                await asyncio.sleep(random.uniform(0.01, 0.1) * (attempt + 1))
        raise TimeoutError(f"lock write kept conflicting after {MAX_WRITE_ATTEMPTS} attempts")

    async def _write(self, ds: DaemonSet, read: LockView, value: str | None) -> None:
        """Replace the lock's value ``read`` from ``ds`` with ``value`` (None: remove it).

        A JSON Patch tests the value as read, so the write fails (:class:`Conflict`) only
        if the lock itself changed since: with N nodes in several lock groups, each group's
        hand-offs and the DaemonSet controller's status updates would otherwise make most
        writes lose to a resourceVersion they did not care about (issue 18 measured 3104
        such 409s against 142 writes in a 100-node roll). A lock not there yet cannot be
        tested for (JSON Patch has no "absent"), so its first write is the guarded update,
        as it is where RBAC forbids ``patch``.
        """
        if read.text is not None and self._may_patch:
            try:
                await self._kube.patch_daemonset_annotation(ds, self.annotation, read.text, value)
                return
            except ApiError as err:
                if err.status.code != 403:
                    raise
                self._may_patch = False
                log.info(
                    "Not allowed to patch DaemonSet %s/%s: lock writes use update, which "
                    "conflicts with every write of the DaemonSet (grant patch, as deploy/ does)",
                    self._namespace,
                    self._name,
                )
        await self._kube.update_daemonset_annotations(ds, {self.annotation: value})


def _view(ds: DaemonSet, annotation: str) -> LockView:
    meta = ds.metadata
    text = (meta.annotations or {}).get(annotation) if meta else None
    version = (meta.resourceVersion if meta else None) or ""
    try:
        return LockView(parse(text), version, text=text)
    except LockFormatError as err:
        return LockView(LockRecord(), version, unreadable=str(err), text=text)
