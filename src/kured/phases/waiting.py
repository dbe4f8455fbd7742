"""The wait phase: observe the node, the lock, the host and the blockers for the policy,
and publish what was decided (``kured.dev/status``, events, gauges)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kured.alerts import PrometheusQueryError, instant_query
from kured.blockers import first_block
from kured.events import Reason
from kured.facts import (
    age,
    annotations_of,
    node_health_problem,
    paused,
    pod_key,
    pod_ready,
    status_of,
)
from kured.host import HostError
from kured.kube import Node
from kured.need import RebootNeed, assess, sentinel_source
from kured.phases.base import (
    Seen,
    compact_json,
    fleet_size,
    now_rfc3339,
    slot_spread,
)
from kured.phases.locking import LockPhase
from kured.policy import (
    PROGRESS_ANNOTATION,
    STATUS_ANNOTATION,
    Decision,
    Observation,
    Phase,
    Progress,
    Step,
    decide,
)

log = logging.getLogger("kured")

GATE_QUERY_TIMEOUT = 10.0
ACTIVITY = {
    Step.BLOCKED: "blocked",
    Step.FINISH: "gate",
    Step.GATE_WAIT: "gate",
    Step.GATE_TIMEOUT: "gate",
    Step.LOOP_GUARD: "reboot-loop",
    Step.WAIT_FOR_LOCK: "waiting-for-lock",
    Step.ACQUIRE_LOCK: "waiting-for-lock",
    Step.DRAIN: "draining",
    Step.REBOOT: "rebooting",
    Step.DRY_RUN: "dry-run",
}


def activity(decision: Decision, obs: Observation) -> str:
    """The one-word state shown by ``kuredctl status`` and the phase metric."""
    if decision.step is Step.NOTHING:
        return "waiting-for-window" if obs.reboot_required else "idle"
    if decision.step is Step.BLOCKED and obs.paused:
        return "paused"
    return ACTIVITY.get(decision.step, "idle")


def block_record(decision: Decision, obs: Observation, old: dict[str, Any]) -> dict[str, Any]:
    """While blockers say no (a pause is no blocker): since when, and whether
    ``--notify-blocked-after`` was told, carried over from the status last written. Kept
    in the cluster, so a restarted pod neither starts the wait again nor tells twice."""
    if decision.step is not Step.BLOCKED or obs.paused:
        return {}
    told = {"blockedTold": True} if old.get("blockedTold") else {}
    return {"blockedSince": old.get("blockedSince") or now_rfc3339(), **told}


class WaitPhase(LockPhase):
    """Observing, and telling what the agent waits for."""

    async def observe(self) -> Seen | None:
        node = await self._kube.get_node(self.node_id)
        if node is None:
            log.error("Node %s not found; waiting for it to be registered", self.node_id)
            return None
        ds = await self._kube.get_daemonset(self.config.ds_namespace, self.config.ds_name)
        self._fleet_size = fleet_size(ds)
        self._fleet_read.set()
        self._slot_spread = slot_spread(self._fleet_size)
        progress = Progress.from_json(annotations_of(node).get(PROGRESS_ANNOTATION))
        await self._follow_lock_group(node, ds, progress)
        lock = await self.lock.snapshot(ds)
        if lock.unreadable:
            log.error("Lock annotation is unreadable: %s", lock.unreadable)
            ds, lock = await self._rebuild_lock(ds, node)
        now = datetime.now(UTC)
        self._last_sentinel = await self._host.reboot_required()
        need = self._assess(self._last_sentinel, now)
        self._metrics.set_reboot_required(need.required)
        self._metrics.set_reboot_reason(need.kind)
        entry = lock.record.entry_of(self.node_id)
        stale = await self._stale_holders(lock, now) if entry is None else {}
        taken = len(lock.record.entries) - len(stale)
        obs = Observation(
            reboot_required=need.required,
            window_open=self.config.schedule.is_open(now),
            holds_lock=entry is not None,
            lock_available=entry is not None
            or (not lock.unreadable and taken < self.config.concurrency),
            boot_id=self._host.boot_id(),
            progress=progress,
            node_unschedulable=bool(node.spec and node.spec.unschedulable),
            unschedulable_before=(
                progress.unschedulable_before
                if progress.phase is not Phase.IDLE
                else bool(entry and entry.unschedulable_before)
            ),
            paused=paused(ds, node),
            max_consecutive_reboots=self.config.max_consecutive_reboots,
            reboot_reason=need.reason,
            dry_run=self.config.dry_run,
        )
        if progress.phase is Phase.GATING:
            obs = replace(
                obs,
                gate=await self._gate_problem(node, progress),
                gate_timed_out=age(progress.since, now) > self.config.post_reboot_gate_timeout,
            )
        self._metrics.window_open.set(obs.window_open)
        self._metrics.lock_held.set(obs.holds_lock)
        self._block_kind = ""
        if decide(obs).step in (Step.ACQUIRE_LOCK, Step.WAIT_FOR_LOCK, Step.DRY_RUN):
            self._block_kind, reason = await first_block(self._blockers)
            if not reason and (reason := await self._over_budget(ds, holding=False)):
                self._block_kind = "max-unavailable"
            obs = replace(obs, blocked_by=reason)
        return Seen(obs, node, lock, stale, need)

    def _assess(self, sentinel: bool, now: datetime) -> RebootNeed:
        """The sentinel (with the packages that asked for it) and ``--max-node-age``."""
        return assess(
            sentinel=sentinel,
            source=sentinel_source(self.config),
            packages=self._host.pending_packages() if sentinel else (),
            uptime=self._uptime(now),
            max_age=self.config.max_node_age,
        )

    def _uptime(self, now: datetime) -> timedelta | None:
        if not self.config.max_node_age:
            return None
        try:
            return now - self._host.boot_time()
        except HostError as err:
            log.warning("Cannot tell the node's age for --max-node-age: %s", err)
            return None

    async def _gate_problem(self, node: Node, progress: Progress) -> str:
        """Why the node is not yet healthy after its reboot ("" = healthy)."""
        problem = node_health_problem(node, progress.boot_id)
        if problem:
            return problem
        selector = self.config.post_reboot_pod_selector
        if selector:
            pods = await self._kube.list_pods(node=self.node_id, selector=selector)
            unready = sorted(pod_key(p) for p in pods if not pod_ready(p))
            if unready:
                return f"pods not Ready: {', '.join(unready)}"
        query = self.config.post_reboot_gate_query
        if query:
            try:
                samples = await instant_query(self.config.prometheus_url, query, GATE_QUERY_TIMEOUT)
            except PrometheusQueryError as err:
                return f"gate query failed: {err}"
            if samples:
                return f"gate query returned {len(samples)} series: {query}"
        return ""

    async def _tell_blocked(self, decision: Decision, seen: Seen) -> float:
        """``--notify-blocked-after``: one message once blockers have said no that long;
        until then, come back when it is due rather than a whole period later."""
        after = self.config.notify_blocked_after.total_seconds()
        since = str(self._status.get("blockedSince", ""))
        if not after or not since or self._status.get("blockedTold"):
            return self._period()
        lasted = age(since, datetime.now(UTC))
        if lasted.total_seconds() < after:
            return min(self._period(), after - lasted.total_seconds())
        await self._notify("blocked", self.node_id, self._details(seen, decision.reason, lasted))
        # Recorded after the message went: a restart in between tells twice, never not at all.
        self._status = self._status | {"blockedTold": True}
        await self._annotate({STATUS_ANNOTATION: compact_json(self._status)})
        return self._period()

    async def _publish_status(self, decision: Decision, seen: Seen) -> None:
        """Keep ``kured.dev/status`` current (written only when it changes) and tell of news."""
        obs, old = seen.obs, status_of(seen.node)
        new = {
            "rebootRequired": obs.reboot_required,
            "reason": obs.reboot_reason,
            "windowOpen": obs.window_open,
            "blockedBy": decision.reason if decision.step is Step.BLOCKED else "",
            "activity": activity(decision, obs),
            "lastReboot": old.get("lastReboot", ""),
            **block_record(decision, obs, old),
        }
        self._status = new
        self._status_changed = new != old
        self._update_gauges(decision, seen.obs, str(new["activity"]))
        if new == old:
            return
        await self._annotate({STATUS_ANNOTATION: compact_json(new)})
        if new["rebootRequired"] and not old.get("rebootRequired"):
            log.info("Reboot required: %s", obs.reboot_reason)
            await self._events.record(
                seen.node, Reason.REBOOT_REQUIRED, f"Reboot required: {obs.reboot_reason}"
            )
        if new["blockedBy"] and new["blockedBy"] != old.get("blockedBy"):
            await self._events.record(seen.node, Reason.REBOOT_BLOCKED, str(new["blockedBy"]))

    def _update_gauges(self, decision: Decision, obs: Observation, activity: str) -> None:
        self._metrics.set_activity(activity)
        self._metrics.reboot_loop.set(decision.step is Step.LOOP_GUARD)
        kind = {Step.LOOP_GUARD: "reboot-loop"}.get(decision.step, "")
        if decision.step is Step.BLOCKED:
            kind = "pause" if obs.paused else self._block_kind
        self._metrics.set_blocked(kind)
        self._last_block = kind  # for the wake-up filter, beside _last_step
        wanting = decision.step in (Step.ACQUIRE_LOCK, Step.WAIT_FOR_LOCK)
        if not wanting:
            self._wanting_since = None
        elif self._wanting_since is None:
            self._wanting_since = time.monotonic()
        self._gate_told &= decision.step is Step.GATE_TIMEOUT
