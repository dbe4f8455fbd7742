"""The reboot phase: command the reboot once, then wait for the host to go down."""

from __future__ import annotations

import logging

from kured.events import Reason
from kured.facts import (
    annotations_of,
)
from kured.phases.base import (
    REBOOT_IN_PROGRESS_ANNOTATION,
    AgentBase,
    Seen,
    now_rfc3339,
    sleep_for,
)

log = logging.getLogger("kured")

MOST_RECENT_REBOOT_NEEDED_ANNOTATION = "weave.works/kured-most-recent-reboot-needed"


class RebootPhase(AgentBase):
    """Commanding the reboot."""

    async def _reboot(self, seen: Seen) -> float:
        await sleep_for(self.config.reboot_delay.total_seconds())
        log.info("Commanding reboot")
        await self._events.record(seen.node, Reason.REBOOTING, f"Rebooting node {self.node_id}")
        await self._notify("reboot", self.node_id, self._details(seen))
        await self._host.reboot()
        log.info("Waiting for reboot")
        # As Go kured: wait for the host to go down. A lock change is no news here, and
        # commanding the reboot again on each would reboot twice wherever a second command
        # queues a second reboot (a BMC or cloud API call); only after a whole period with
        # the host still up does the next evaluation command it again.
        await self._sleep(self._period(), wakeable=False)
        return 0

    async def _mark_reboot_needed(self, seen: Seen) -> None:
        """``--annotate-nodes``: stamp the node once per reboot, as Go kured does."""
        if not self.config.annotate_nodes:
            return
        if REBOOT_IN_PROGRESS_ANNOTATION in annotations_of(seen.node):
            return
        stamp = now_rfc3339()
        await self._annotate(
            {REBOOT_IN_PROGRESS_ANNOTATION: stamp, MOST_RECENT_REBOOT_NEEDED_ANNOTATION: stamp}
        )
