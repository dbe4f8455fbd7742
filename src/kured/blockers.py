"""Reasons not to reboot now, asked just before taking the lock.

Each blocker answers "blocked, because …" or "not blocked". A blocker that
cannot tell (its query failed) says blocked: not knowing is no reason to take
a node down, which is what Go kured does too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from kured.alerts import PrometheusQueryError, instant_query
from kured.kube import Kube

log = logging.getLogger("kured.blockers")

FINISHED_PHASES = {"Succeeded", "Failed"}


class Blocker(Protocol):
    kind: str  # for the kured_reboot_blocked{reason} metric: "pods", "prometheus", …

    async def check(self) -> str | None:
        """The reason the reboot is blocked, or None."""


class PodBlocker:
    """Pods on this node matching any ``--blocking-pod-selector`` block the reboot."""

    kind = "pods"

    def __init__(self, kube: Kube, node: str, selectors: Sequence[str]) -> None:
        self._kube = kube
        self._node = node
        self._selectors = selectors

    async def check(self) -> str | None:
        names: list[str] = []
        for selector in self._selectors:
            try:
                pods = await self._kube.list_pods(node=self._node, selector=selector)
            except Exception as err:  # any failure to know counts as blocked
                return f"blocking pod query failed ({selector}): {err}"
            names += [
                f"{p.metadata.namespace}/{p.metadata.name}"
                for p in pods
                if p.metadata and (p.status is None or p.status.phase not in FINISHED_PHASES)
            ]
        if names:
            return f"{len(names)} blocking pods: {', '.join(sorted(set(names)))}"
        return None


class QueryBlocker:
    """``--blocking-query``: any PromQL that returns a sample blocks the reboot (kured#619),
    e.g. ``kube_deployment_status_replicas_unavailable > 0`` or a maintenance flag metric."""

    kind = "query"

    def __init__(self, url: str, queries: Sequence[str], timeout: float = 10.0) -> None:
        self._url = url
        self._queries = queries
        self._timeout = timeout

    async def check(self) -> str | None:
        for query in self._queries:
            try:
                samples = await instant_query(self._url, query, self._timeout)
            except PrometheusQueryError as err:
                return f"blocking query failed ({query}): {err}"
            if samples:
                return f"blocking query returned {len(samples)} series: {query}"
        return None


async def first_block(blockers: Sequence[Blocker]) -> tuple[str, str]:
    """The first blocker's (kind, reason), in order (alerts, queries, then pods; Go kured
    asks Prometheus before pods too).

    ("", "") when nothing blocks.
    """
    for blocker in blockers:
        reason = await blocker.check()
        if reason:
            return blocker.kind, reason
    return "", ""
