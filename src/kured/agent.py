"""The per-node agent: observe, ask the policy, apply the step, record, repeat.

All decisions are made by :func:`kured.policy.decide`; this module only
gathers observations and carries out steps. Progress is recorded on the Node
(:data:`kured.policy.PROGRESS_ANNOTATION`) before each irreversible effect, so a
daemon killed at any point picks up where it was.

Waiting is event-driven: a watch on the lock's DaemonSet wakes the agent as
soon as a slot frees up (a node waiting for one after a random spread, so that a
hundred waiting nodes do not all race for it), and inotify on the sentinel's
directory (a cheap stat every few seconds where inotify is unavailable) notices a
new reboot requirement at once. A lock change wakes only an agent it matters to:
not an idle one, nor one whose host is going down. ``--period`` stays the longest
time between two full evaluations (and the only clock when watches are not allowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx2

from kured.alerts import PrometheusBlocker, PrometheusQueryError, instant_query
from kured.blockers import Blocker, PodBlocker, QueryBlocker, first_block
from kured.capacity import over_budget
from kured.config import Config
from kured.drain import Drainer, DrainError, DrainOptions
from kured.durations import format_go_duration
from kured.events import EventRecorder, Reason
from kured.facts import (
    age,
    annotations_of,
    holder_facts,
    labels,
    node_health_problem,
    node_state,
    paused,
    pod_key,
    pod_ready,
    status_of,
    witnessed,
)
from kured.filewatch import FileWatch
from kured.host import Host, HostError
from kured.kube import ApiError, DaemonSet, Kube, Node, load_config
from kured.lease import LeaseLock
from kured.lock import DaemonSetLock, Lock, LockChange, LockFormatError, LockView
from kured.metrics import Health, Metrics, MetricsServer
from kured.need import RebootNeed, assess, sentinel_source
from kured.notify import Details, Notifier
from kured.policy import (
    PAUSED_ANNOTATION,
    PROGRESS_ANNOTATION,
    STATUS_ANNOTATION,
    Decision,
    Observation,
    Phase,
    Progress,
    Step,
    decide,
    reclaim_reason,
)

log = logging.getLogger("kured")
T = TypeVar("T")

REBOOT_IN_PROGRESS_ANNOTATION = "weave.works/kured-reboot-in-progress"
MOST_RECENT_REBOOT_NEEDED_ANNOTATION = "weave.works/kured-most-recent-reboot-needed"
SENTINEL_POLL_SECONDS = 2.0
GATE_POLL_SECONDS = 2.0
ERROR_RETRY_SECONDS = 5.0
GATE_QUERY_TIMEOUT = 10.0
WATCH_RETRY_MAX_SECONDS = 30.0
JITTER = 0.1
# How far apart nodes waiting for a slot wake when one frees: per node running kured, and
# at most (see Agent._on_lock_change).
SLOT_SPREAD_PER_NODE_SECONDS = 0.01
SLOT_SPREAD_MAX_SECONDS = 2.0
HEALTH_BEAT_SECONDS = 30.0
HEALTH_STUCK_SECONDS = 180.0  # one evaluation: a few bounded API calls and checks
HEALTH_SLACK_SECONDS = 60.0

# Steps after which a lock change is no news: nothing to do with the lock (idle, waiting
# for the window, the reboot-loop guard, a dry run) or the host is going down.
LOCK_BLIND = frozenset({Step.NOTHING, Step.LOOP_GUARD, Step.DRY_RUN, Step.REBOOT})
# Steps after which only a change that frees a slot is news.
WANTS_A_SLOT = frozenset({Step.WAIT_FOR_LOCK, Step.ACQUIRE_LOCK})

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


@dataclass(frozen=True)
class Seen:
    """One observation with the raw objects it was made from."""

    obs: Observation
    node: Node
    lock: LockView
    stale: dict[str, str]  # holders whose slot may be taken over → why
    # Why a reboot is needed, with the packages that asked for it.
    need: RebootNeed = field(default_factory=RebootNeed)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def activity(decision: Decision, obs: Observation) -> str:
    """The one-word state shown by ``kuredctl status`` and the phase metric."""
    if decision.step is Step.NOTHING:
        return "waiting-for-window" if obs.reboot_required else "idle"
    if decision.step is Step.BLOCKED and obs.paused:
        return "paused"
    return ACTIVITY.get(decision.step, "idle")


class Agent:
    """One node's reboot coordinator."""

    def __init__(
        self,
        *,
        config: Config,
        host: Host,
        kube: Kube,
        blockers: list[Blocker],
        notifier: Notifier,
        metrics: Metrics,
        health: Health,
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self._host = host
        self._kube = kube
        self._blockers = blockers
        self._notifier = notifier
        self._notify = notifier.notify
        self._metrics = metrics
        self._health = health
        self._events = EventRecorder(kube)
        self._wake = asyncio.Event()
        self._last_step: Step | None = None  # the last decision's (None: deciding)
        # A waiting node's wake-up, pending since a slot freed (None: none pending).
        self._spread_wake: asyncio.TimerHandle | None = None
        self._slot_spread = SLOT_SPREAD_MAX_SECONDS  # for the DaemonSet's size, once read
        self._last_sentinel: bool | None = None
        self._status: dict[str, Any] = {}  # what kured.dev/status says (as last read or written)
        self._status_changed = False
        self._block_kind = ""  # which blocker said no in the last observation
        self._wanting_since: float | None = None  # when the node started waiting for the lock
        self._blocked_since: float | None = None  # when blockers started saying no
        self._blocked_told = False  # --notify-blocked-after has been sent for this block
        self._dry_run_told = ""  # the last --dry-run plan notified (sent again when it changes)
        self._gate_told = False  # the gate timeout has been announced (once per timeout)
        self.lock = make_lock(config, kube)
        self._drainer = Drainer(kube, DrainOptions.from_config(config))
        # When this agent first saw each lock holder in its present state (monotonic clock).
        self._holders_seen: dict[tuple[object, ...], float] = {}

    @classmethod
    def wired(
        cls, config: Config, host: Host, kube: Kube, metrics: Metrics, health: Health
    ) -> Agent:
        """An agent with the blockers and notifier its configuration asks for."""
        return cls(
            config=config,
            host=host,
            kube=kube,
            blockers=build_blockers(config, kube),
            notifier=Notifier.from_config(config),
            metrics=metrics,
            health=health,
        )

    # -- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Forever: decide, act, wait as long as the step allows."""
        await self._join_lock_group()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.lock.keep_alive())
            if not self.config.poll_only:
                tasks.create_task(self._watch_lock())
                tasks.create_task(self._watch_pause("this node", self._watch_own_node))
                if not isinstance(self.lock, DaemonSetLock):  # its lock watch sees the pause
                    tasks.create_task(self._watch_pause("the DaemonSet", self._watch_daemonset))
            if not (self.config.poll_only or self.config.reboot_sentinel_command):
                tasks.create_task(self._watch_sentinel())
            while True:
                self._wake.clear()  # what changes from here on, during the evaluation too, is news
                try:
                    pause = await self.run_once()
                except (
                    ApiError,
                    httpx2.HTTPError,
                    HostError,
                    LockFormatError,
                    TimeoutError,
                ) as err:
                    # Progress is recorded in the cluster, so trying again later is always safe.
                    log.error(
                        "Error in the main loop (retrying in %gs): %s", ERROR_RETRY_SECONDS, err
                    )
                    self._metrics.errors.inc()
                    pause = ERROR_RETRY_SECONDS
                if pause:
                    await self._sleep(pause)

    async def _join_lock_group(self) -> None:
        """``--lock-group-label``: the node's label value picks its lock (read once, at start)."""
        label = self.config.lock_group_label
        if not label:
            return
        while (node := await self._kube.get_node(self.node_id)) is None:
            log.error("Node %s not found; waiting for it to be registered", self.node_id)
            await asyncio.sleep(ERROR_RETRY_SECONDS)
        group = ((node.metadata.labels if node.metadata else None) or {}).get(label, "")
        log.info("Lock group: %s=%s", label, group or "(none)")
        self.lock = make_lock(self.config, self._kube, group)

    async def run_once(self) -> float:
        """One decision and its step; returns how long to wait before the next (0 = at once)."""
        self._health.beat("evaluate")
        self._last_step = None  # until the decision, every lock change may be news
        seen = await self.observe()
        if seen is None:
            return self._period()
        decision = decide(seen.obs)
        self._last_step = decision.step
        log.debug("decision %s: %s", decision.step, decision.reason)
        await self._publish_status(decision, seen)
        return await self.apply(decision, seen)

    async def observe(self) -> Seen | None:
        node = await self._kube.get_node(self.node_id)
        if node is None:
            log.error("Node %s not found; waiting for it to be registered", self.node_id)
            return None
        ds = await self._kube.get_daemonset(self.config.ds_namespace, self.config.ds_name)
        self._slot_spread = slot_spread(ds)
        lock = await self.lock.snapshot(ds)
        if lock.unreadable:
            log.error("Lock annotation is unreadable: %s", lock.unreadable)
            ds, lock = await self._rebuild_lock(ds, node)
        now = datetime.now(UTC)
        self._last_sentinel = await self._host.reboot_required()
        need = self._assess(self._last_sentinel, now)
        self._metrics.set_reboot_required(need.required)
        self._metrics.set_reboot_reason(need.kind)
        progress = Progress.from_json(annotations_of(node).get(PROGRESS_ANNOTATION))
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

    async def _over_budget(self, ds: DaemonSet, *, holding: bool) -> str:
        """``--max-unavailable``: why this node may not go down now ("" = it may)."""
        budget = self.config.max_unavailable
        if budget is None:
            return ""
        nodes = [node_state(n) for n in await self._kube.list_nodes()]
        holders = await self.lock.all_holders(ds)
        return over_budget(budget, nodes, self.node_id, holders, holding)

    async def _rebuild_lock(self, ds: DaemonSet, node: Node) -> tuple[DaemonSet, LockView]:
        """Garbage in the lock would stop every reboot for good: rebuild it from the progress
        records of this lock's nodes (a node draining, rebooting or gating holds a slot).

        The nodes are read after the garbage was, and the record is written only over that
        version of it, so a node that records a drain after we looked at it either finds
        itself in the rebuilt lock or sees garbage again (see :meth:`_drain`).
        """
        holders = {}
        for name in await self._lock_members(ds):
            member = node if name == self.node_id else await self._kube.get_node(name)
            if member is None or not self._same_group(member, node):
                continue
            progress = Progress.from_json(annotations_of(member).get(PROGRESS_ANNOTATION))
            if progress.phase is not Phase.IDLE:
                holders[name] = progress.unschedulable_before
        if await self.lock.rebuild(ds, holders):
            named = ", ".join(holders) or "nobody"
            log.warning("Rebuilt the lock from the nodes' progress records: held by %s", named)
        ds = await self._kube.get_daemonset(self.config.ds_namespace, self.config.ds_name)
        return ds, await self.lock.snapshot(ds)

    async def _lock_members(self, ds: DaemonSet) -> set[str]:
        """The nodes this kured DaemonSet runs on (and this one): those that share its lock."""
        uid = ds.metadata.uid if ds.metadata else None
        pods = await self._kube.list_pods(namespace=self.config.ds_namespace)
        owned = {
            pod.spec.nodeName
            for pod in pods
            if pod.spec
            and pod.spec.nodeName
            and pod.metadata
            and any(ref.uid == uid for ref in pod.metadata.ownerReferences or [])
        }
        return owned | {self.node_id}

    def _same_group(self, other: Node, mine: Node) -> bool:
        """``--lock-group-label``: only nodes of this node's group share its lock."""
        label = self.config.lock_group_label
        return not label or labels(other).get(label) == labels(mine).get(label)

    async def _stale_holders(self, lock: LockView, now: datetime) -> dict[str, str]:
        """Holders whose slot may be taken over, with why (only asked when every slot is taken)."""
        if len(lock.record.entries) < self.config.concurrency:
            return {}
        bound = self.config.stale_lock_timeout.total_seconds()
        stale, seen = {}, dict[tuple[object, ...], float]()
        for entry in lock.record.entries:
            holder = await self._kube.get_node(entry.node_id)
            facts = holder_facts(entry, holder, now)
            key = (entry.node_id, entry.created, facts.ready, facts.phase, facts.boot_changed)
            seen[key] = self._holders_seen.get(key, time.monotonic())
            reason = reclaim_reason(witnessed(facts, entry, time.monotonic() - seen[key]), bound)
            if reason:
                stale[entry.node_id] = reason
        self._holders_seen = seen
        return stale

    async def apply(self, decision: Decision, seen: Seen) -> float:
        """Carry out one step; the return value is how long to wait afterwards."""
        step = decision.step
        if step is Step.NOTHING:
            log.info(decision.reason)
            await self._free_deleted_holders(seen.lock)
            await self._set_taint(seen.node, seen.obs.reboot_required)  # waiting for the window
            if not seen.obs.reboot_required and seen.obs.progress.consecutive_reboots:
                await self._annotate({PROGRESS_ANNOTATION: None})  # the loop is over
            return self._period()
        if step is Step.DRY_RUN:
            return await self._dry_run(decision, seen)
        await self._mark_reboot_needed(seen)
        if step is Step.BLOCKED:
            log.info("Reboot blocked: %s", decision.reason)
            return await self._tell_blocked(decision, seen)
        if step is Step.WAIT_FOR_LOCK:
            holders = ", ".join(seen.lock.record.holders()) or "unreadable lock"
            log.info("Lock already held: %s", holders)
            await self._set_taint(seen.node, True)
            return self._period()
        if step is Step.ACQUIRE_LOCK:
            return await self._acquire(seen)
        if step is Step.DRAIN:
            return await self._drain(seen)
        if step is Step.REBOOT:
            return await self._reboot(seen)
        if step is Step.FINISH:
            return await self._finish(decision, seen)
        if step in (Step.GATE_WAIT, Step.GATE_TIMEOUT):
            return await self._gate(decision, seen)
        if step is Step.LOOP_GUARD:
            return await self._loop_guard(decision, seen)
        return await self._release(decision, seen)

    async def _free_deleted_holders(self, lock: LockView) -> None:
        """A holder whose Node is gone never releases its slot, and a node that needs the
        lock only reclaims it when every slot is taken: idle agents free such slots, so a
        deleted node's lock does not outlive it."""
        bound = self.config.stale_lock_timeout.total_seconds()
        for entry in lock.record.entries:
            if entry.node_id == self.node_id or await self._kube.get_node(entry.node_id):
                continue
            reason = reclaim_reason(holder_facts(entry, None, datetime.now(UTC)), bound)
            if reason:
                log.warning("Releasing stale lock of %s: %s", entry.node_id, reason)
                await self.lock.release(entry.node_id)

    # -- steps -----------------------------------------------------------------------

    async def _acquire(self, seen: Seen) -> float:
        log.info("Reboot required")
        for holder, why in seen.stale.items():
            log.warning("Releasing stale lock of %s: %s", holder, why)
        reclaim = frozenset(seen.stale)
        acquired, holders = await self.lock.acquire(seen.obs.node_unschedulable, reclaim)
        if not acquired:
            log.info("Lock already held: %s", ", ".join(holders))
            await self._set_taint(seen.node, True)
            return self._period()
        log.info("Acquired reboot lock")
        self._metrics.stale_locks.inc(len(reclaim))
        if self._wanting_since is not None:
            self._metrics.lock_latency.observe(time.monotonic() - self._wanting_since)
            self._wanting_since = None
        await self._events.record(seen.node, Reason.LOCK_ACQUIRED, "Acquired reboot lock")
        return 0

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
            await _sleep_for(self.config.drain_delay.total_seconds())
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

    async def _reboot(self, seen: Seen) -> float:
        await _sleep_for(self.config.reboot_delay.total_seconds())
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

    async def _tell_blocked(self, decision: Decision, seen: Seen) -> float:
        """``--notify-blocked-after``: one message once blockers have said no that long;
        until then, come back when it is due rather than a whole period later."""
        after = self.config.notify_blocked_after.total_seconds()
        if not after or self._blocked_since is None or self._blocked_told:
            return self._period()
        lasted = time.monotonic() - self._blocked_since
        if lasted < after:
            return min(self._period(), after - lasted)
        self._blocked_told = True
        details = self._details(seen, decision.reason, timedelta(seconds=lasted))
        await self._notify("blocked", self.node_id, details)
        return self._period()

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

    def _reboot_how(self) -> str:
        if self.config.reboot_method == "signal":
            return f"signal {self.config.reboot_signal} to PID 1"
        return " ".join(self.config.reboot_command)

    def _details(self, seen: Seen, reason: str = "", lasted: timedelta | None = None) -> Details:
        """A message's placeholders: the reason (the reboot's, unless another is given),
        how long the state lasted, the packages that asked for the reboot."""
        seconds = timedelta(seconds=int(lasted.total_seconds())) if lasted is not None else None
        return Details(
            reason=reason or seen.obs.reboot_reason,
            duration=format_go_duration(seconds) if seconds is not None else "",
            packages=", ".join(seen.need.packages),
        )

    async def _release(self, decision: Decision, seen: Seen) -> float:
        """RELEASE after a healthy reboot, or ABANDON: free the slot, back to idle."""
        obs = seen.obs
        if decision.step is Step.ABANDON:
            log.info("Giving up the reboot: %s", decision.reason)
            await self._uncordon(decision, seen)
        idle = Progress(consecutive_reboots=obs.progress.consecutive_reboots)
        changes: dict[str, str | None] = {
            PROGRESS_ANNOTATION: idle.to_json() if idle.consecutive_reboots else None
        }
        if self.config.annotate_nodes:
            changes[REBOOT_IN_PROGRESS_ANNOTATION] = None
        if decision.step is Step.RELEASE:
            self._status = self._status | {"lastReboot": now_rfc3339()}
            changes[STATUS_ANNOTATION] = _dumps(self._status)
            self._metrics.reboots.inc()
            self._metrics.last_reboot.set_to_current_time()
        await self._annotate(changes)
        if obs.holds_lock:
            await _sleep_for(self.config.lock_release_delay.total_seconds())
            log.info("Releasing lock")
            await self.lock.release()
            await self._events.record(seen.node, Reason.LOCK_RELEASED, "Released reboot lock")
        return 0

    # -- small effects -------------------------------------------------------------------

    async def _uncordon(self, decision: Decision, seen: Seen) -> None:
        if decision.uncordon:
            log.info("Uncordoning node %s", self.node_id)
            await self._kube.set_unschedulable(self.node_id, False)
            await self._events.record(seen.node, Reason.UNCORDONED, f"Uncordoned {self.node_id}")

    async def _record(self, phase: Phase, unschedulable_before: bool) -> None:
        """Write the progress record before the effect it announces."""
        progress = Progress(phase, self._host.boot_id(), unschedulable_before, now_rfc3339())
        await self._annotate({PROGRESS_ANNOTATION: progress.to_json()})

    async def _annotate(self, annotations: dict[str, str | None]) -> None:
        await self._kube.patch_node(self.node_id, {"metadata": {"annotations": annotations}})

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
        }
        self._status = new
        self._status_changed = new != old
        self._update_gauges(decision, seen.obs, str(new["activity"]))
        if new == old:
            return
        await self._annotate({STATUS_ANNOTATION: _dumps(new)})
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
        wanting = decision.step in (Step.ACQUIRE_LOCK, Step.WAIT_FOR_LOCK)
        if not wanting:
            self._wanting_since = None
        elif self._wanting_since is None:
            self._wanting_since = time.monotonic()
        self._gate_told &= decision.step is Step.GATE_TIMEOUT
        if decision.step is not Step.BLOCKED or obs.paused:  # a pause is no blocker
            self._blocked_since, self._blocked_told = None, False
        elif self._blocked_since is None:
            self._blocked_since = time.monotonic()

    async def _set_labels(self, labels: tuple[tuple[str, str], ...]) -> None:
        if labels:
            await self._kube.patch_node(self.node_id, {"metadata": {"labels": dict(labels)}})

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

    async def _set_taint(self, node: Node, present: bool) -> None:
        """``--prefer-no-schedule-taint``: steer pods away while waiting for the lock or
        for the maintenance window (Go kured removes it outside the window; kured#725)."""
        key = self.config.prefer_no_schedule_taint
        if not key:
            return
        taints = [t.to_dict() for t in (node.spec.taints if node.spec else None) or []]
        ours = [t for t in taints if t.get("key") == key and t.get("effect") == "PreferNoSchedule"]
        if bool(ours) == present:
            return
        kept = [t for t in taints if t not in ours]
        if present:
            kept.append({"key": key, "effect": "PreferNoSchedule"})
        version = (node.metadata.resourceVersion if node.metadata else None) or ""
        try:
            await self._kube.set_taints(self.node_id, kept, version)
        except Exception as err:  # retried at the next evaluation
            log.warning("Could not update taint %s: %s", key, err)

    # -- waiting -----------------------------------------------------------------------

    def _period(self) -> float:
        return self.config.period.total_seconds() * random.uniform(1, 1 + JITTER)

    async def _sleep(self, seconds: float, *, wakeable: bool = True) -> None:
        """Sleep until the timeout or (if wakeable) until a watcher says something changed.

        The sleep is cut in slices that each beat the health check, so a long
        ``--period`` is not mistaken for a stuck loop.
        """
        wake = self._wake if wakeable else asyncio.Event()
        deadline = asyncio.get_running_loop().time() + seconds
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            self._health.beat("waiting")
            if await woken(wake, min(left, HEALTH_BEAT_SECONDS)):
                return

    async def _watch_lock(self) -> None:
        """Wake the loop when the lock changes in a way that matters to the last step."""
        await self._follow("the lock", self.lock.changes, self._on_lock_change)

    async def _watch_pause(
        self, what: str, objects: Callable[[], AsyncIterator[Node | DaemonSet]]
    ) -> None:
        """Wake the loop when ``kured.dev/paused`` changes on ``what``, so that a resume (or
        a pause) takes effect at once rather than at the next ``--period``."""
        last: list[str | None] = []  # the value last seen, kept across reconnects

        def on_change(obj: Node | DaemonSet) -> None:
            value = annotations_of(obj).get(PAUSED_ANNOTATION)
            if last and last[0] != value and self._last_step is not Step.REBOOT:
                self._wake.set()
            last[:] = [value]

        await self._follow(what, objects, on_change)

    async def _watch_own_node(self) -> AsyncIterator[Node]:
        async for _event, node in self._kube.watch_node(self.node_id):
            yield node

    async def _watch_daemonset(self) -> AsyncIterator[DaemonSet]:
        config = self.config
        async for _event, ds in self._kube.watch_daemonset(config.ds_namespace, config.ds_name):
            yield ds

    async def _follow(
        self, what: str, changes: Callable[[], AsyncIterator[T]], on_change: Callable[[T], None]
    ) -> None:
        """Feed each change a watch delivers to ``on_change``, watching again after the
        server ends a watch or it fails (backing off); give up where RBAC forbids it, leaving
        the waking to ``--period``."""
        delay = 1.0
        while True:
            try:
                async for change in changes():
                    delay = 1.0
                    on_change(change)
            except ApiError as err:
                if err.status.code == 403:
                    log.warning("Not allowed to watch %s (%s); polling every --period", what, err)
                    return
                log.debug("watch of %s failed: %s", what, err)
            except Exception as err:
                log.debug("watch of %s failed: %s", what, err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, WATCH_RETRY_MAX_SECONDS)

    def _on_lock_change(self, change: LockChange) -> None:
        """Wake the loop if the change matters after the last step.

        A slot that frees up is news to every node waiting for one, and all of them reading
        the lock and writing it at once is a thundering herd: one wins, the others get 409
        Conflict and read again, on every hand-off. So a waiting node wakes at a random
        moment of a spread that grows with the fleet (:func:`slot_spread`): the first of W
        waiters wakes about spread/W after the slot freed and takes it, and the others, told
        by the watch that every slot is taken again before their turn, do not wake at all.
        """
        step = self._last_step
        if step in LOCK_BLIND:
            return
        if step not in WANTS_A_SLOT:
            self._wake.set()
        elif not change.slot_free:
            if self._spread_wake:
                self._spread_wake.cancel()
            self._spread_wake = None
        elif self._spread_wake is None:
            spread = random.uniform(0, self._slot_spread)
            self._spread_wake = asyncio.get_running_loop().call_later(spread, self._spread_over)

    def _spread_over(self) -> None:
        self._spread_wake = None
        self._wake.set()

    async def _watch_sentinel(self) -> None:
        """Wake the loop when the sentinel file appears or goes: inotify on its directory
        tells at once and costs nothing meanwhile; without inotify, a stat every few seconds."""
        try:
            with FileWatch(self.config.reboot_sentinel) as watch:
                await self._check_sentinel()  # it may have changed before the watch began
                async for _change in watch.changes():
                    await self._check_sentinel()
        except OSError as err:
            log.info("Checking the sentinel every %gs (no inotify: %s)", SENTINEL_POLL_SECONDS, err)
        while True:
            await asyncio.sleep(SENTINEL_POLL_SECONDS)
            await self._check_sentinel()

    async def _check_sentinel(self) -> None:
        with contextlib.suppress(Exception):
            if await self._host.reboot_required() != self._last_sentinel:
                self._wake.set()


def slot_spread(ds: DaemonSet) -> float:
    """The spread of waiting nodes' wake-ups: 10 ms per node that runs kured (the
    DaemonSet's desiredNumberScheduled), at most 2 s. That keeps the herd that wakes before
    the winner's write is seen (W × the write's latency / spread) to a few nodes, and the
    wait for the first waker (spread / W) to about 10 ms while most nodes wait, a few tenths
    of a second for the last few."""
    nodes = (ds.status.desiredNumberScheduled if ds.status else 0) or 0
    return min(SLOT_SPREAD_MAX_SECONDS, max(nodes, 1) * SLOT_SPREAD_PER_NODE_SECONDS)


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


async def woken(event: asyncio.Event, seconds: float) -> bool:
    """Whether event is set within seconds. Not ``asyncio.wait_for``: on Python 3.11 it drops
    a cancellation that comes just as the event is set, and the task it was meant to stop
    runs on (an agent whose host went down, evaluating and rebooting again)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
            return True
    return False


async def _sleep_for(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


def make_lock(config: Config, kube: Kube, group: str = "") -> Lock:
    """The ``--lock-backend`` the operator chose, for one ``--lock-group-label`` group."""
    if config.lock_backend == "lease":
        return LeaseLock(
            kube,
            namespace=config.ds_namespace,
            name=config.ds_name,
            node_id=config.node_id,
            concurrency=config.concurrency,
            duration=config.lock_ttl,
            group=group,
        )
    return DaemonSetLock(
        kube,
        namespace=config.ds_namespace,
        name=config.ds_name,
        annotation=config.lock_annotation,
        node_id=config.node_id,
        ttl=config.lock_ttl,
        concurrency=config.concurrency,
        group=group,
    )


def build_blockers(config: Config, kube: Kube) -> list[Blocker]:
    """Prometheus alerts, then our --blocking-query, then pods (Go kured: alerts, pods)."""
    blockers: list[Blocker] = []
    prometheus = PrometheusBlocker.from_config(config)
    if prometheus is not None:
        blockers.append(prometheus)
    if config.blocking_queries:
        blockers.append(QueryBlocker(config.prometheus_url, config.blocking_queries))
    if config.blocking_pod_selectors:
        blockers.append(PodBlocker(kube, config.node_id, config.blocking_pod_selectors))
    return blockers


async def run_daemon(config: Config, host: Host) -> None:
    """Connect to the API server and run this node's agent until cancelled."""
    metrics, health = Metrics(config.node_id), Health(stuck_after=HEALTH_STUCK_SECONDS)
    server = MetricsServer(metrics, health, config.metrics_host, config.metrics_port)
    async with server, Kube(load_config(config.kubeconfig)) as kube:
        log.info("Serving /metrics and /healthz on %s:%d", config.metrics_host or "*", server.port)
        await Agent.wired(config, host, kube, metrics, health).run()
