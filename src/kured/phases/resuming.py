"""The resume phase: back from the reboot, uncordon, hold the lock through the post-reboot
health gate, and stop a reboot loop."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

from kured.events import Reason
from kured.facts import (
    age,
)
from kured.phases.base import (
    AgentBase,
    Seen,
    now_rfc3339,
)
from kured.policy import (
    PROGRESS_ANNOTATION,
    Decision,
    Phase,
    Step,
)

log = logging.getLogger("kured")

GATE_POLL_SECONDS = 2.0


class ResumePhase(AgentBase):
    """Coming back from the reboot."""

    async def _finish(self, decision: Decision, seen: Seen) -> float:
        """Back from the reboot: uncordon (if we cordoned), then hold the lock for the gate."""
        obs = seen.obs
        log.info("Holding lock")
        await self._events.record(seen.node, Reason.REBOOTED, "Node is back from its reboot")
        await self._uncordon(decision, seen)
        await self._set_labels(self.config.post_reboot_node_labels)
        took = age(obs.progress.since, datetime.now(UTC))  # since the reboot was commanded
        await self._notify("uncordon", self.node_id, self._details(seen, lasted=took))
        await self._set_taint(seen.node, False)
        in_a_row = obs.progress.consecutive_reboots + 1 if obs.reboot_required else 0
        gating = replace(obs.progress, phase=Phase.GATING, since=now_rfc3339())
        await self._annotate(
            {PROGRESS_ANNOTATION: replace(gating, consecutive_reboots=in_a_row).to_json()}
        )
        return 0

    async def _gate(self, decision: Decision, seen: Seen) -> float:
        """Keep the lock until the node is healthy; past the timeout, say so once, loudly."""
        if decision.step is Step.GATE_WAIT:
            log.info("Waiting for the post-reboot health gate: %s", decision.reason)
        elif not self._gate_told:  # activity stays "gate", so the status does not change
            self._gate_told = True
            log.error("Post-reboot health gate failed; keeping the lock: %s", decision.reason)
            self._metrics.gate_timeouts.inc()
            await self._events.record(seen.node, Reason.GATE_TIMEOUT, decision.reason)
            waited = age(seen.obs.progress.since, datetime.now(UTC))
            details = self._details(seen, decision.reason, waited)
            await self._notify("gate-timeout", self.node_id, details)
        return GATE_POLL_SECONDS

    async def _loop_guard(self, decision: Decision, seen: Seen) -> float:
        """The sentinel survives every reboot: stop, and make sure a human hears of it."""
        log.error("Not rebooting node %s: %s", self.node_id, decision.reason)
        if self._status_changed:
            await self._events.record(seen.node, Reason.REBOOT_LOOP, decision.reason)
            await self._notify("reboot-loop", self.node_id, self._details(seen, decision.reason))
        return self._period()
