"""Drain a node the way ``kubectl drain`` does when kured configures it.

Every pod on the node is evicted through the Eviction API, so
PodDisruptionBudgets are honoured, except pods that a drain must leave alone:
DaemonSet pods (their controller would put them straight back) and mirror pods
(the kubelet owns them). Unmanaged pods and pods with emptyDir volumes are
evicted too (kured runs drain with ``--force --delete-emptydir-data``).

When a budget forbids an eviction (HTTP 429) the drain backs off and tries
again until ``--drain-timeout``, logging which budget blocks; then it waits
until every evicted pod is really gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kured.config import Config
from kured.kube import Kube, Pod

log = logging.getLogger("kured.drain")

# After a refusal (429: a budget has no room) retry soon, then back off to kubectl drain's
# fixed 5 s: a replacement pod is often Ready within a second, and a fixed 5 s wait would
# add up to seconds per pod over a roll.
EVICTION_RETRY_FIRST_SECONDS = 0.5
EVICTION_RETRY_MAX_SECONDS = 5.0
DELETION_POLL_SECONDS = 1.0
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


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


def _key(pod: Pod) -> str:
    meta = pod.metadata
    assert meta is not None
    return f"{meta.namespace}/{meta.name}"


class Drainer:
    """Evicts a node's pods and waits for them to go."""

    def __init__(self, kube: Kube, options: DrainOptions) -> None:
        self._kube = kube
        self._options = options

    async def pods_to_evict(self, node: str) -> list[Pod]:
        pods = await self._kube.list_pods(node=node, selector=self._options.pod_selector)
        now = datetime.now(UTC)
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
        retry = EVICTION_RETRY_FIRST_SECONDS
        while True:
            outcome = await self._kube.evict(pod, self._options.grace_period)
            if outcome.evicted or outcome.gone:
                blocked.pop(key, None)
                log.info("Pod %s evicted", key)
                return
            blocked[key] = outcome.blocked_by
            log.warning(
                "Error when evicting pod %s (will retry after %gs): %s",
                key,
                retry,
                outcome.blocked_by,
            )
            await asyncio.sleep(retry)
            retry = min(retry * 2, EVICTION_RETRY_MAX_SECONDS)

    async def _wait_until_gone(self, node: str, uids: Iterable[str | None]) -> None:
        waiting = {u for u in uids if u}
        while waiting:
            remaining = await self.pods_to_evict(node)
            waiting &= {p.metadata.uid for p in remaining if p.metadata}
            if waiting:
                await asyncio.sleep(DELETION_POLL_SECONDS)


def _seconds(timeout: timedelta | None) -> float | None:
    return timeout.total_seconds() if timeout else None
