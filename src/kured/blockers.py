"""Reasons not to reboot now, asked just before taking the lock.

Each blocker answers "blocked, because …" or "not blocked". A blocker that
cannot tell (its query failed) says blocked: not knowing is no reason to take
a node down, which is what Go kured does too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

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


async def first_block(blockers: Sequence[Blocker]) -> tuple[str, str]:
    """The first blocker's (kind, reason), in order (Prometheus before pods, as Go kured).

    ("", "") when nothing blocks.
    """
    for blocker in blockers:
        reason = await blocker.check()
        if reason:
            return blocker.kind, reason
    return "", ""
