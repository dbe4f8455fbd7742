"""kuredctl's conversations with the API server, through :mod:`kured.kube` only.

Each operation reads what it needs, lets :mod:`kured.ctl.model` make sense of
it, and writes only with checks that never overwrite a change someone else made
in between: the lock through :class:`kured.lock.DaemonSetLock` or a
resourceVersion-guarded update, annotations on Nodes with a merge patch of one
key. Every failure a user can cause or meet is turned into :class:`CtlError`
with one line that says what to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx2
from lightkube import ConfigError

from kured.ctl.model import (
    KURED_EVENTS,
    HistoryEntry,
    LockSummary,
    StatusReport,
    build_status,
    describe_lock,
    history,
    summarize_lock,
)
from kured.facts import annotations_of
from kured.kube import ApiError, Conflict, DaemonSet, Kube, load_config
from kured.lock import DaemonSetLock, LockFormatError
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
    async with connect(target) as kube:
        ds = await read_daemonset(kube, target)
        nodes = await kube.list_nodes()
    return build_status(ds, nodes, target.annotation, now)


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
        lock = summarize_lock(target.annotation, text, now, await _node_names(kube))
        if node is None:
            return await _unlock_all(kube, target, ds, lock, confirm)
        return await _unlock_node(kube, target, node, lock, confirm)


async def _node_names(kube: Kube) -> set[str] | None:
    """Node names, or None for a user who may update the lock but not list Nodes."""
    try:
        return {n.metadata.name for n in await kube.list_nodes() if n.metadata and n.metadata.name}
    except ApiError as err:
        if err.status.code == 403:
            return None
        raise


def _ask(confirm: Confirm | None, target: Target, lock: LockSummary, question: str) -> None:
    shown = f"Lock {target.annotation} on DaemonSet {target.ds_path}: {describe_lock(lock)}"
    if confirm is not None and not confirm(f"{shown}\n{question}"):
        raise CtlError("not confirmed; nothing changed")


async def _unlock_all(
    kube: Kube, target: Target, ds: DaemonSet, lock: LockSummary, confirm: Confirm | None
) -> str:
    shown = annotations_of(ds).get(target.annotation)
    if shown is None:
        return "the lock is free; nothing to do"
    _ask(confirm, target, lock, "Remove the whole lock?")
    for _ in range(MAX_WRITE_ATTEMPTS):
        current = annotations_of(ds).get(target.annotation)
        if current is None:
            return "the lock was removed by someone else meanwhile; nothing to do"
        if current != shown:
            raise CtlError(
                f"the lock changed meanwhile (now {current}); nothing removed, run unlock again"
            )
        try:
            await kube.update_daemonset_annotations(ds, {target.annotation: None})
            return f"removed the lock ({describe_lock(lock)})"
        except Conflict:
            ds = await read_daemonset(kube, target)
    raise CtlError(f"DaemonSet {target.ds_path} kept changing; nothing removed, try again")


async def _unlock_node(
    kube: Kube, target: Target, node: str, lock: LockSummary, confirm: Confirm | None
) -> str:
    if lock.unreadable:
        raise CtlError(
            f"the lock is unreadable ({lock.unreadable}); run unlock without --node to remove it"
        )
    if node not in {h.node_id for h in lock.holders}:
        raise CtlError(f"{node} does not hold the lock ({describe_lock(lock)})")
    _ask(confirm, target, lock, f"Remove {node}'s entry?")
    daemonset_lock = DaemonSetLock(
        kube,
        namespace=target.namespace,
        name=target.ds_name,
        annotation=target.annotation,
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
    return f"removed {node}'s entry from the lock"


# -- history -----------------------------------------------------------------------------


async def fetch_history(target: Target, node: str | None, limit: int | None) -> list[HistoryEntry]:
    fields = {**KURED_EVENTS, **({"involvedObject.name": node} if node else {})}
    async with connect(target) as kube:
        events = await kube.list_events(fields)
    return history(events, limit)
