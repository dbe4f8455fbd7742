"""Kubernetes Events on the Node, so ``kubectl describe node`` tells the reboot's story.

Events are a courtesy to the operator: failing to write one is logged and
otherwise ignored, it never holds up a reboot.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from kured.kube import Kube, Node

log = logging.getLogger("kured.events")


class Reason(StrEnum):
    REBOOT_REQUIRED = "RebootRequired"
    REBOOT_BLOCKED = "RebootBlocked"
    LOCK_ACQUIRED = "LockAcquired"
    DRAINING = "Draining"
    DRAIN_FAILED = "DrainFailed"
    REBOOTING = "Rebooting"
    REBOOTED = "Rebooted"
    UNCORDONED = "Uncordoned"
    LOCK_RELEASED = "LockReleased"
    GATE_TIMEOUT = "GateTimeout"
    REBOOT_LOOP = "RebootLoop"


WARNINGS = {Reason.DRAIN_FAILED, Reason.GATE_TIMEOUT, Reason.REBOOT_LOOP, Reason.REBOOT_BLOCKED}


class EventRecorder:
    """Writes Events about one node; best effort."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    async def record(self, node: Node, reason: Reason, message: str) -> None:
        try:
            await self._kube.create_node_event(node, reason, message, warning=reason in WARNINGS)
        except Exception as err:
            log.warning("Could not record event %s: %s", reason, err)
