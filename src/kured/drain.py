"""Drain a node the way ``kubectl drain`` does when kured configures it.

Every pod on the node is evicted through the Eviction API, so
PodDisruptionBudgets are honoured, except pods that a drain must leave alone:
DaemonSet pods (their controller would put them straight back) and mirror pods
(the kubelet owns them). Unmanaged pods and pods with emptyDir volumes are
evicted too (kured runs drain with ``--force --delete-emptydir-data``).

When a budget forbids an eviction (HTTP 429) the drain tries again until
``--drain-timeout``, logging which budget blocks: as soon as a watch shows a
budget covering the pod with room (``status.disruptionsAllowed``), at the
latest after a back-off. A pod that its budget counts as disrupted but that was
never deleted (an eviction cut short between the two, see :func:`left_disrupted`) is
deleted then, instead of waiting two minutes for the disruption controller to
forget it. Then it waits until every evicted pod is really gone,
woken by a watch of the node's pods. Either watch falls back to the back-off
or to polling where RBAC does not allow it (Go kured's RBAC has no watch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx2

from kured.config import Config
from kured.kube import ApiError, Kube, Pod

log = logging.getLogger("kured.drain")
T = TypeVar("T")

# After a refusal (429: a budget has no room) the drain retries the moment a watch shows
# room, and otherwise soon, backing off to kubectl drain's fixed 5 s: a replacement pod is
# often Ready within a second, and a fixed 5 s wait would add up to seconds per pod over a
# roll. The back-off is all there is where budgets may not be watched.
EVICTION_RETRY_FIRST_SECONDS = 0.5
EVICTION_RETRY_MAX_SECONDS = 5.0
# Evicted pods are waited for by a watch of the node's pods, which sees each deletion as it
# happens; the node's pods are listed again after DELETION_RELIST_SECONDS (sooner when
# --skip-wait-for-delete-timeout is due), every DELETION_POLL_SECONDS where pods may not be
# watched.
DELETION_POLL_SECONDS = 1.0
DELETION_RELIST_SECONDS = 10.0
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
FORBIDDEN = 403


class DrainError(Exception):
    """The drain did not finish; ``blocked_by`` names the budget when one was in the way."""

    def __init__(self, message: str, blocked_by: str = "") -> None:
        super().__init__(message)
        self.blocked_by = blocked_by


@dataclass(frozen=True)
class DrainPlan:
    """What a drain would do now (``--dry-run``): pods it would evict, and those a
    PodDisruptionBudget (or another refusal) would hold up, with the server's reason."""

    evict: tuple[str, ...]
    blocked: dict[str, str]

    def describe(self) -> str:
        text = f"would evict {len(self.evict)} pods" + (
            f" ({', '.join(self.evict)})" if self.evict else ""
        )
        if self.blocked:
            held = "; ".join(f"{pod}: {why}" for pod, why in sorted(self.blocked.items()))
            text += f"; blocked now: {held}"
        return text


@dataclass(frozen=True)
class DrainOptions:
    grace_period: int | None  # None: each pod's own
    pod_selector: str
    timeout: timedelta | None  # None: wait forever
    skip_wait_for_delete_after: timedelta | None

    @classmethod
    def from_config(cls, config: Config) -> DrainOptions:
        return cls(
            grace_period=config.drain_grace_period if config.drain_grace_period >= 0 else None,
            pod_selector=config.drain_pod_selector,
            timeout=config.drain_timeout or None,
            skip_wait_for_delete_after=(
                timedelta(seconds=config.skip_wait_for_delete_timeout)
                if config.skip_wait_for_delete_timeout > 0
                else None
            ),
        )


def must_stay(pod: Pod) -> bool:
    """Pods a drain leaves on the node: DaemonSet-managed and mirror pods."""
    meta = pod.metadata
    if meta is None:
        return True
    if MIRROR_ANNOTATION in (meta.annotations or {}):
        return True
    return any(ref.kind == "DaemonSet" and ref.controller for ref in meta.ownerReferences or [])


def _stale_deletion(pod: Pod, after: timedelta | None, now: datetime) -> bool:
    """A pod deleted longer ago than ``--skip-wait-for-delete-timeout`` is not waited for."""
    deleted = pod.metadata.deletionTimestamp if pod.metadata else None
    return after is not None and deleted is not None and now - deleted > after


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` and ``matchExpressions``, as JSON) selects
    these labels; no selector selects nothing, an empty one everything (policy/v1)."""
    if selector is None:
        return False
    wanted = selector.get("matchLabels") or {}
    if any(labels.get(key) != value for key, value in wanted.items()):
        return False
    return all(_matches(rule, labels) for rule in selector.get("matchExpressions") or [])


def _matches(rule: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator, values = rule.get("key", ""), rule.get("operator"), rule.get("values") or []
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    return operator == "DoesNotExist" and key not in labels


def has_room_for(budget: Mapping[str, Any], pod: Pod) -> bool:
    """The budget covers the pod and allows a disruption now."""
    labels = (pod.metadata.labels if pod.metadata else None) or {}
    allowed = (budget.get("status") or {}).get("disruptionsAllowed") or 0
    return allowed > 0 and selects((budget.get("spec") or {}).get("selector"), labels)


def left_disrupted(budget: Mapping[str, Any], pod: Pod) -> bool:
    """The budget covers the pod and lists this very pod in ``status.disruptedPods``.

    The Eviction API records a pod there, then deletes it; an eviction cut short in
    between (client gone, API server or etcd restarting) leaves a live pod the budget
    counts as disrupted, refusing every other eviction until the disruption controller
    drops the entry two minutes later. Deleting that pod takes nothing the budget had
    not already granted. An entry older than the pod is about an earlier pod of the
    same name (StatefulSets), not this one.
    """
    meta = pod.metadata
    if meta is None or meta.name is None or meta.creationTimestamp is None:
        return False
    since = ((budget.get("status") or {}).get("disruptedPods") or {}).get(meta.name)
    if not since or not selects((budget.get("spec") or {}).get("selector"), meta.labels or {}):
        return False
    return datetime.fromisoformat(since.replace("Z", "+00:00")) >= meta.creationTimestamp


@dataclass(frozen=True)
class _BudgetSighting:
    """What the budget watch showed: room (``room_was_there`` when it was there as the
    watch began, not seen appearing), or the budget that holds the pod as disrupted."""

    room_was_there: bool = False
    left_disrupted_by: str = ""


def _key(pod: Pod) -> str:
    meta = pod.metadata
    assert meta is not None
    return f"{meta.namespace}/{meta.name}"


class Drainer:
    """Evicts a node's pods and waits for them to go."""

    def __init__(self, kube: Kube, options: DrainOptions) -> None:
        self._kube = kube
        self._options = options
        self._unwatchable: set[str] = set()  # what RBAC did not let us watch (told once)
        self._may_delete = True  # False once RBAC refused deleting a pod (told once)

    async def pods_to_evict(self, node: str) -> list[Pod]:
        pods = await self._kube.list_pods(node=node, selector=self._options.pod_selector)
        return self._evictable(pods, datetime.now(UTC))

    def _evictable(self, pods: list[Pod], now: datetime) -> list[Pod]:
        after = self._options.skip_wait_for_delete_after
        return [p for p in pods if not must_stay(p) and not _stale_deletion(p, after, now)]

    async def plan(self, node: str) -> DrainPlan:
        """Ask the Eviction API about every pod, server-side dry run: nothing is evicted.

        Each eviction is judged on its own, so two pods under one budget that allows one
        disruption both pass here; the real drain evicts them one after the other.
        """
        pods = sorted(await self.pods_to_evict(node), key=_key)
        outcomes = await asyncio.gather(
            *(self._kube.evict(p, self._options.grace_period, dry_run=True) for p in pods)
        )
        blocked = {
            _key(pod): outcome.blocked_by
            for pod, outcome in zip(pods, outcomes, strict=True)
            if not (outcome.evicted or outcome.gone)
        }
        return DrainPlan(tuple(_key(pod) for pod in pods), blocked)

    async def drain(self, node: str) -> None:
        """Evict everything evictable from ``node``; raise :class:`DrainError` on timeout."""
        blocked: dict[str, str] = {}
        try:
            async with asyncio.timeout(_seconds(self._options.timeout)):
                pods = await self.pods_to_evict(node)
                await asyncio.gather(*(self._evict(p, blocked) for p in pods))
                await self._wait_until_gone(node, {p.metadata.uid for p in pods if p.metadata})
        except TimeoutError as err:
            reason = "; ".join(f"{pod}: {why}" for pod, why in sorted(blocked.items()))
            message = f"drain of node {node} timed out after {self._options.timeout}"
            raise DrainError(f"{message}: {reason}" if reason else message, reason) from err

    async def _evict(self, pod: Pod, blocked: dict[str, str]) -> None:
        key = _key(pod)
        log.info("Evicting pod %s", key)
        retry, changes_only = EVICTION_RETRY_FIRST_SECONDS, False
        while True:
            outcome = await self._kube.evict(pod, self._options.grace_period)
            if outcome.evicted or outcome.gone:
                blocked.pop(key, None)
                log.info("Pod %s evicted", key)
                return
            blocked[key] = outcome.blocked_by
            log.warning(
                "Error when evicting pod %s (will retry after %gs at most): %s",
                key,
                retry,
                outcome.blocked_by,
            )
            # Room that the budget showed already when we looked and that the server then
            # refused (a budget not yet processed, two budgets) is not trusted twice in a row.
            seen = await self._room_for(pod, retry, changes_only=changes_only)
            if seen.left_disrupted_by and await self._delete_left_disrupted(pod, seen):
                blocked.pop(key, None)
                return
            changes_only = seen.room_was_there
            retry = min(retry * 2, EVICTION_RETRY_MAX_SECONDS)

    async def _delete_left_disrupted(self, pod: Pod, seen: _BudgetSighting) -> bool:
        """Finish the eviction the budget granted: delete the pod (see :func:`left_disrupted`)."""
        key = _key(pod)
        log.warning(
            "Pod %s is counted as disrupted by PodDisruptionBudget %s but was never deleted "
            "(an interrupted eviction); deleting it",
            key,
            seen.left_disrupted_by,
        )
        outcome = await self._kube.delete_pod(pod, self._options.grace_period)
        if outcome.evicted or outcome.gone:
            log.info("Pod %s deleted", key)
            return True
        self._may_delete = not outcome.blocked_by.startswith(f"HTTP {FORBIDDEN}")
        log.warning("Error when deleting pod %s: %s", key, outcome.blocked_by)
        return False

    async def _room_for(self, pod: Pod, within: float, *, changes_only: bool) -> _BudgetSighting:
        """Wait until a budget covering the pod has room or holds it as disrupted, at most
        ``within`` seconds."""
        room = self._budget_room(pod, changes_only=changes_only)
        return await self._watching("poddisruptionbudgets", room, within) or _BudgetSighting()

    async def _budget_room(self, pod: Pod, *, changes_only: bool) -> _BudgetSighting | None:
        """Until a budget covering the pod shows room or holds it as disrupted (see
        :meth:`_room_for`); None when the watch ended first. ``changes_only``: only room
        seen appearing counts."""
        namespace = (pod.metadata.namespace if pod.metadata else None) or ""
        async with contextlib.aclosing(self._kube.watch_budgets(namespace)) as budgets:
            async for kind, budget in budgets:
                if self._may_delete and left_disrupted(budget, pod):
                    name = (budget.get("metadata") or {}).get("name", "?")
                    return _BudgetSighting(left_disrupted_by=f"{namespace}/{name}")
                if (kind == "MODIFIED" or not changes_only) and has_room_for(budget, pod):
                    return _BudgetSighting(room_was_there=kind != "MODIFIED")
        return None

    async def _wait_until_gone(self, node: str, uids: Iterable[str | None]) -> None:
        waiting = {u for u in uids if u}
        while waiting:
            pods, version = await self._kube.node_pods_listing(node, self._options.pod_selector)
            now = datetime.now(UTC)
            waited = [p for p in pods if p.metadata and p.metadata.uid in waiting]
            waiting &= {p.metadata.uid for p in self._evictable(waited, now) if p.metadata}
            if not waiting:
                return
            deletions = self._deletions(node, version, waiting)
            await self._watching("pods", deletions, self._relist_after(waited, now))

    async def _deletions(self, node: str, version: str, waiting: set[str]) -> bool | None:
        """Until every pod in ``waiting`` is deleted (taken out as they go); None when the
        watch ended first."""
        async with contextlib.aclosing(self._kube.watch_node_pods(node, version)) as changes:
            async for kind, pod in changes:
                if kind == "DELETED":
                    waiting.discard((pod.get("metadata") or {}).get("uid"))
                if not waiting:
                    return True
        return None

    def _relist_after(self, waited: list[Pod], now: datetime) -> float:
        """How long to wait for deletions before listing again: a second where pods may not
        be watched; while watched, until the first waited pod's deletion is older than
        ``--skip-wait-for-delete-timeout`` (then it is no longer waited for), at most
        :data:`DELETION_RELIST_SECONDS`."""
        if "pods" in self._unwatchable:
            return DELETION_POLL_SECONDS
        after = self._options.skip_wait_for_delete_after
        deleted = [p.metadata.deletionTimestamp for p in waited if p.metadata]
        stale_in = [(d + after - now).total_seconds() for d in deleted if d and after]
        return max(min([DELETION_RELIST_SECONDS, *stale_in]), DELETION_POLL_SECONDS / 10)

    async def _watching(
        self, resource: str, wait: Coroutine[Any, Any, T | None], within: float
    ) -> T | None:
        """Run a wait that watches ``resource``, ``within`` seconds at most; None when it
        timed out. A watch that fails or ends leaves the rest of the time to the clock, and
        one that RBAC does not allow is not tried again (and said once)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                if resource in self._unwatchable:
                    wait.close()
                else:
                    with self._watch_failures(resource):
                        if (outcome := await wait) is not None:
                            return outcome
                await asyncio.sleep(within)
        return None

    @contextlib.contextmanager
    def _watch_failures(self, resource: str) -> Iterator[None]:
        try:
            yield
        except ApiError as err:
            if err.status.code != FORBIDDEN or resource in self._unwatchable:
                log.debug("watch of %s failed: %s", resource, err)
                return
            self._unwatchable.add(resource)
            log.warning(
                "Not allowed to watch %s (%s); the drain waits on its clock instead",
                resource,
                err,
            )
        except (httpx2.HTTPError, ValueError, KeyError) as err:
            log.debug("watch of %s failed: %s", resource, err)


def _seconds(timeout: timedelta | None) -> float | None:
    return timeout.total_seconds() if timeout else None
