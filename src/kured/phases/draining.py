"""The drain phase: record it, cordon and drain the node (or, with ``--dry-run``, say what
the drain would do); a failed drain gives the slot back."""

from __future__ import annotations

import logging
import math
import time
from datetime import timedelta

from kured.drain import DrainError
from kured.events import Reason
from kured.phases.base import (
    Seen,
    sleep_for,
)
from kured.phases.locking import LockPhase
from kured.policy import (
    Decision,
    Phase,
    Step,
)

log = logging.getLogger("kured")

HEALTH_SLACK_SECONDS = 60.0


class DrainPhase(LockPhase):
    """Cordoning and draining the node."""

    async def _drain(self, seen: Seen) -> float:
        obs = seen.obs
        if obs.progress.phase is not Phase.DRAINING:
            await self._record(Phase.DRAINING, obs.unschedulable_before)
            ds = await self._kube.get_daemonset(self.config.ds_namespace, self.config.ds_name)
            if (await self.lock.snapshot(ds)).record.entry_of(self.node_id) is None:
                return 0  # the slot went meanwhile (a rebuilt lock): decide again
            if over := await self._over_budget(ds, holding=True):
                # Another node took a slot at the same moment and goes first.
                await self._release(Decision(Step.ABANDON, over), seen)
                return self._period()
            await self._set_labels(self.config.pre_reboot_node_labels)
            await sleep_for(self.config.drain_delay.total_seconds())
            await self._notify("drain", self.node_id, self._details(seen))
        log.info("Draining node %s", self.node_id)
        await self._events.record(seen.node, Reason.DRAINING, f"Draining node {self.node_id}")
        if not obs.node_unschedulable:  # as kubectl (and Go kured): never cordon twice
            await self._kube.set_unschedulable(self.node_id, True)
        started = time.monotonic()
        try:
            timeout = self.config.drain_timeout.total_seconds() or math.inf
            with (
                self._health.operation("drain", timeout + HEALTH_SLACK_SECONDS),
                self._metrics.drain_duration.time(),
            ):
                await self._drainer.drain(self.node_id)
        except DrainError as err:
            log.error("Error draining node %s: %s", self.node_id, err)
            await self._events.record(seen.node, Reason.DRAIN_FAILED, str(err))
            lasted = timedelta(seconds=time.monotonic() - started)
            await self._notify("drain-failed", self.node_id, self._details(seen, str(err), lasted))
            if not self.config.force_reboot:
                abandon = Decision(Step.ABANDON, "drain failed", not obs.unschedulable_before)
                await self._release(abandon, seen)
                # As Go kured, try again a whole period later: woken by a lock change (its
                # own release is one) it would take the lock straight back and drain again,
                # cordoning and uncordoning the node in a loop and keeping the slot from
                # the other nodes.
                await self._sleep(self._period(), wakeable=False)
                return 0
            log.warning("Force reboot set: rebooting node %s anyway", self.node_id)
        await self._record(Phase.REBOOTING, obs.unschedulable_before)
        return 0

    async def _dry_run(self, decision: Decision, seen: Seen) -> float:
        """``--dry-run``: what the drain and the reboot would do, from a server-side dry run
        of every eviction; logged each time, notified when it changes. Nothing is locked."""
        plan = await self._drainer.plan(self.node_id)
        holders = ", ".join(seen.lock.record.holders()) or "nobody"
        why = seen.obs.reboot_reason or decision.reason
        log.info("Dry run: would drain node %s (%s): %s", self.node_id, why, plan.describe())
        log.info(
            "Dry run: would reboot node %s with %s (lock now held by %s)",
            self.node_id,
            self._reboot_how(),
            holders,
        )
        summary = f"would drain and reboot ({why}); {plan.describe()}"
        if summary != self._dry_run_told:
            self._dry_run_told = summary
            await self._notifier.send(f"Dry run on node {self.node_id}: {summary}", "dry-run")
        return self._period()
