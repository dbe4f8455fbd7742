"""kuredctl's conversations with the API server, through :mod:`kured.kube` only.

Each operation reads what it needs, lets :mod:`kured.ctl.model` make sense of
it, and writes only with checks that never overwrite a change someone else made
in between: the lock through :class:`kured.lock.DaemonSetLock` or a
resourceVersion-guarded update, the lock Leases (``--lock-backend=lease``)
through :func:`kured.lease.release_leases`, annotations on Nodes with a merge
patch of one key. Every failure a user can cause or meet is turned into :class:`CtlError`
with one line that says what to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx2
from lightkube import ConfigError

from kured.ctl.locks import (
    LeaseSummary,
    LockSummary,
    describe_leases,
    describe_lock,
    summarize_group_locks,
    summarize_leases,
    summarize_lock,
)
from kured.ctl.model import KURED_EVENTS, HistoryEntry, StatusReport, build_status, history
from kured.facts import annotations_of
from kured.kube import ApiError, Conflict, DaemonSet, Kube, Lease, load_config
from kured.lease import LOCK_LABEL, release_leases
from kured.lock import DaemonSetLock
from kured.lockformat import LockFormatError
from kured.policy import PAUSED_ANNOTATION, PauseNote

MAX_WRITE_ATTEMPTS = 10

Confirm = Callable[[str], bool]
"""Shows a question (with the lock as it is now) and says whether to go ahead."""


class CtlError(Exception):
    """A failure to report as one line (exit status 1), never as a traceback."""


@dataclass(frozen=True)
class Target:
    """Where kured keeps its lock, and how to reach the cluster (the global options)."""

    kubeconfig: str | None
    namespace: str
    ds_name: str
    annotation: str

    @property
    def ds_path(self) -> str:
        return f"{self.namespace}/{self.ds_name}"

    @property
    def lease_labels(self) -> dict[str, str]:
        """What selects the DaemonSet's lock Leases, every group's (:mod:`kured.lease`)."""
        return {LOCK_LABEL: self.ds_name}


@contextlib.asynccontextmanager
async def connect(target: Target) -> AsyncIterator[Kube]:
    """A :class:`Kube` whose transport and API failures surface as :class:`CtlError`."""
    try:
        config = load_config(target.kubeconfig)
        single = config.get()
    except ConfigError as err:
        raise CtlError(f"cannot load a kubeconfig: {err}") from err
    server = single.cluster.server if single else "?"
    try:
        async with Kube(config, field_manager="kuredctl") as kube:
            yield kube
    except httpx2.TransportError as err:
        raise CtlError(
            f"cannot reach the API server at {server}: {err or type(err).__name__}"
        ) from err
    except ApiError as err:
        raise CtlError(_api_failure(err, server)) from err


def _api_failure(err: ApiError, server: str) -> str:
    code = err.status.code
    message = err.status.message or str(err)
    if code == 401:
        return f"the API server at {server} rejected the credentials: {message}"
    if code == 403:
        return f"permission denied: {message}"
    return f"the API server said {code}: {message}"


async def read_daemonset(kube: Kube, target: Target) -> DaemonSet:
    try:
        return await kube.get_daemonset(target.namespace, target.ds_name)
    except ApiError as err:
        if err.status.code == 404:
            raise CtlError(
                f"DaemonSet {target.ds_path} not found; is kured installed? use -n/--ds-name"
            ) from err
        raise


# -- status -----------------------------------------------------------------------------


async def fetch_status(target: Target, now: datetime) -> StatusReport:
    """Both locks are read before the nodes: an agent publishes its status on its Node before
    it takes a slot, so every holder the report names has that status in the nodes read
    after (nodes read first could predate a holder that took its Lease in between)."""
    async with connect(target) as kube:
        ds = await read_daemonset(kube, target)
        leases, unreadable = await read_leases(kube, target)
        nodes = await kube.list_nodes()
    return build_status(
        ds, nodes, target.annotation, now, leases=leases, leases_unreadable=unreadable
    )


async def read_leases(kube: Kube, target: Target) -> tuple[list[Lease], str]:
    """The lock Leases, and why they could not be listed ("" if they could).

    A user whose role predates ``--lock-backend=lease`` may read the DaemonSet but not
    Leases: that is reported, not fatal, so the annotation lock stays visible to them.
    """
    try:
        return await kube.list_leases(target.namespace, target.lease_labels), ""
    except ApiError as err:
        if err.status.code == 403:
            return [], f"permission denied: {err.status.message or err}"
        raise


# -- pause / resume -------------------------------------------------------------------------


async def set_paused(target: Target, node: str | None, note: PauseNote | None) -> str | None:
    """Write (``note``) or remove (None) ``kured.dev/paused``; returns the previous value."""
    value = note.render() if note else None
    async with connect(target) as kube:
        if node is None:
            return await _annotate_daemonset(kube, target, PAUSED_ANNOTATION, value)
        return await _annotate_node(kube, node, PAUSED_ANNOTATION, value)


async def _annotate_daemonset(
    kube: Kube, target: Target, key: str, value: str | None
) -> str | None:
    """One annotation on the DaemonSet, through the update verb kured's own RBAC grants.

    The update is guarded by the resourceVersion just read; on a conflict (the
    DaemonSet controller updates its status all the time) read and try again.
    """
    for _ in range(MAX_WRITE_ATTEMPTS):
        ds = await read_daemonset(kube, target)
        previous = annotations_of(ds).get(key)
        if previous == value:
            return previous
        try:
            await kube.update_daemonset_annotations(ds, {key: value})
            return previous
        except Conflict:
            continue
    raise CtlError(f"DaemonSet {target.ds_path} kept changing; nothing written, try again")


async def _annotate_node(kube: Kube, node: str, key: str, value: str | None) -> str | None:
    """A merge patch of one key: nothing else on the Node can be overwritten."""
    found = await kube.get_node(node)
    if found is None:
        raise CtlError(f"Node {node} not found")
    previous = annotations_of(found).get(key)
    if previous != value:
        await kube.patch_node(node, {"metadata": {"annotations": {key: value}}})
    return previous


# -- unlock ------------------------------------------------------------------------------


async def unlock(target: Target, node: str | None, confirm: Confirm | None, now: datetime) -> str:
    """Remove the lock (``node`` None) or one holder's entry; returns what happened.

    ``confirm`` None means the user said ``--yes``. Asking takes time, during which
    the lock may change hands: the removal then refuses rather than free a lock
    the user never saw.
    """
    async with connect(target) as kube:
        ds = await read_daemonset(kube, target)
        text = annotations_of(ds).get(target.annotation)
        names = await _node_names(kube)
        lock = summarize_lock(target.annotation, text, now, names)
        groups = summarize_group_locks(annotations_of(ds), target.annotation, now, names)
        leases, unreadable = await read_leases(kube, target)
        shown = Shown(
            lock, summarize_leases(leases, now, names, unreadable), groups, text is not None
        )
        if node is None:
            return await _unlock_all(kube, target, ds, shown, confirm)
        return await _unlock_node(kube, target, node, shown, confirm)


@dataclass(frozen=True)
class Shown:
    """The lock as ``unlock`` showed it: the annotation, every ``--lock-group-label``
    group's annotation (``<annotation>-<group>``), and the Leases if there are any."""

    lock: LockSummary
    leases: LeaseSummary | None
    groups: tuple[LockSummary, ...] = ()
    base_set: bool = True  # the base annotation is on the DaemonSet (maybe empty or garbage)

    def lease_holders(self) -> list[str]:
        return [h.node_id for h in self.leases.holders] if self.leases else []

    def annotation_locks(self) -> list[LockSummary]:
        """The base lock (if it is set) and every group's."""
        return [self.lock, *self.groups] if self.base_set else list(self.groups)

    def held_by(self, node: str) -> list[LockSummary]:
        """The annotation locks that list ``node`` as a holder."""
        return [
            lock for lock in self.annotation_locks() if node in {h.node_id for h in lock.holders}
        ]

    def describe(self) -> str:
        groups = "".join(f"; group {g.group}: {describe_lock(g)}" for g in self.groups)
        leases = f"; Leases: {describe_leases(self.leases)}" if self.leases else ""
        return f"{describe_lock(self.lock)}{groups}{leases}"


async def _node_names(kube: Kube) -> set[str] | None:
    """Node names, or None for a user who may update the lock but not list Nodes."""
    try:
        return {n.metadata.name for n in await kube.list_nodes() if n.metadata and n.metadata.name}
    except ApiError as err:
        if err.status.code == 403:
            return None
        raise


def _ask(confirm: Confirm | None, target: Target, shown: Shown, question: str) -> None:
    lines = [f"Lock {target.annotation} on DaemonSet {target.ds_path}: {describe_lock(shown.lock)}"]
    lines += [f"Lock {g.annotation} (group {g.group}): {describe_lock(g)}" for g in shown.groups]
    if shown.leases:
        lines.append(f"Lock Leases of DaemonSet {target.ds_path}: {describe_leases(shown.leases)}")
    if confirm is not None and not confirm("\n".join([*lines, question])):
        raise CtlError("not confirmed; nothing changed")


async def _unlock_all(
    kube: Kube, target: Target, ds: DaemonSet, shown: Shown, confirm: Confirm | None
) -> str:
    """The annotations first (nothing is written to one that changed), then the Leases."""
    locks = shown.annotation_locks()
    if not locks and not shown.lease_holders():
        return "the lock is free; nothing to do"
    _ask(confirm, target, shown, "Remove the whole lock?")
    done = [await _remove_annotation(kube, target, ds, lock) for lock in locks]
    if shown.lease_holders():
        done.append(await _free_leases(kube, target, shown))
    return "; ".join(done)


async def _remove_annotation(kube: Kube, target: Target, ds: DaemonSet, lock: LockSummary) -> str:
    """Remove one lock annotation as it was shown, or nothing if it changed since."""
    key, name = lock.annotation, lock_name(lock)
    shown = annotations_of(ds).get(key)
    for _ in range(MAX_WRITE_ATTEMPTS):
        current = annotations_of(ds).get(key)
        if current is None:
            return f"{name} was removed by someone else meanwhile; nothing to do"
        if current != shown:
            raise CtlError(
                f"{name} changed meanwhile (now {current}); nothing removed, run unlock again"
            )
        try:
            ds = await kube.update_daemonset_annotations(ds, {key: None})
            return f"removed {name} ({describe_lock(lock)})"
        except Conflict:
            ds = await read_daemonset(kube, target)
    raise CtlError(f"DaemonSet {target.ds_path} kept changing; nothing removed, try again")


async def _free_leases(kube: Kube, target: Target, shown: Shown) -> str:
    """Free the Leases of the holders shown; nothing if another node took one meanwhile.

    Each holder's Leases are cleared only while that holder still has them
    (:func:`kured.lease.release_leases`), so a slot that changed hands after the check
    is never taken from a node the user did not see.
    """
    leases, _ = await read_leases(kube, target)
    current = summarize_leases(leases, datetime.now(UTC), None) or LeaseSummary(0)
    if any(h.node_id not in shown.lease_holders() for h in current.holders):
        raise CtlError(
            f"the lock Leases changed meanwhile (now {describe_leases(current)}); "
            "no Lease freed, run unlock again"
        )
    freed = [n for n in shown.lease_holders() if await _release_lease(kube, target, n)]
    if not freed:
        return "the lock Leases were released meanwhile; nothing to do"
    return f"freed the lock Leases of {', '.join(freed)}"


async def _release_lease(kube: Kube, target: Target, node: str) -> bool:
    try:
        return await release_leases(kube, target.namespace, target.lease_labels, node)
    except TimeoutError as err:
        raise CtlError(f"could not free {node}'s lock Lease: {err}") from err


async def _unlock_node(
    kube: Kube, target: Target, node: str, shown: Shown, confirm: Confirm | None
) -> str:
    held = shown.held_by(node)
    in_leases = node in shown.lease_holders()
    unreadable = [lock for lock in shown.annotation_locks() if lock.unreadable]
    if unreadable and not held and not in_leases:
        raise CtlError(
            f"{lock_name(unreadable[0])} is unreadable ({unreadable[0].unreadable});"
            " run unlock without --node to remove it"
        )
    if not held and not in_leases:
        raise CtlError(f"{node} does not hold the lock ({shown.describe()})")
    _ask(confirm, target, shown, f"Remove {node}'s entry?")
    done = [await _release_entry(kube, target, node, lock) for lock in held]
    if in_leases:
        freed = await _release_lease(kube, target, node)
        done.append(
            f"freed {node}'s lock Lease" if freed else f"{node} released its Lease meanwhile"
        )
    return "; ".join(done)


async def _release_entry(kube: Kube, target: Target, node: str, lock: LockSummary) -> str:
    """Remove ``node``'s entry from whatever the annotation holds at the time of the write."""
    daemonset_lock = DaemonSetLock(
        kube,
        namespace=target.namespace,
        name=target.ds_name,
        annotation=lock.annotation,
        node_id=node,
        ttl=timedelta(0),
        concurrency=lock.slots,
    )
    try:
        freed = await daemonset_lock.release(node)
    except (LockFormatError, TimeoutError) as err:
        raise CtlError(f"could not release {node}'s entry: {err}") from err
    if not freed:
        return f"{node} released the lock meanwhile; nothing to do"
    return f"removed {node}'s entry from {lock_name(lock)}"


def lock_name(lock: LockSummary) -> str:
    """``the lock``, or ``group G's lock`` for a ``--lock-group-label`` group's annotation."""
    return f"group {lock.group}'s lock" if lock.group else "the lock"


# -- history -----------------------------------------------------------------------------


async def fetch_history(target: Target, node: str | None, limit: int | None) -> list[HistoryEntry]:
    fields = {**KURED_EVENTS, **({"involvedObject.name": node} if node else {})}
    async with connect(target) as kube:
        events = await kube.list_events(fields)
    return history(events, limit)
