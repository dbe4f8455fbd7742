"""The per-node agent: observe, ask the policy, apply the step, record, repeat.

All decisions are made by :func:`kured.policy.decide`; this module only
gathers observations and carries out steps. Progress is recorded on the Node
(:data:`kured.policy.PROGRESS_ANNOTATION`) before each irreversible effect, so a
daemon killed at any point picks up where it was.

Waiting is event-driven: a watch on the lock's DaemonSet wakes the agent as
soon as a slot frees up (a node waiting for one after a random spread, so that a
hundred waiting nodes do not all race for it), and inotify on the sentinel's
directory (a cheap stat every few seconds where inotify is unavailable) notices a
new reboot requirement at once. A lock change wakes only an agent it matters to
(:func:`kured.phases.wakeups.lock_news`): not an idle one, nor one whose host is going
down, nor one blocked by pods, alerts or queries (a paused one: only a change of the
pause). A watch of the Nodes labelled as lock holders wakes the waiting nodes when a
holder's Node is deleted; the watch of the agent's own Node follows its pause and its
``--lock-group-label`` group. ``--period`` stays the longest
time between two full evaluations (and the only clock when watches are not allowed).
"""

from __future__ import annotations

import asyncio
import logging

import httpx2

from kured.alerts import PrometheusBlocker
from kured.blockers import Blocker, PodBlocker, QueryBlocker
from kured.config import Config
from kured.host import Host, HostError
from kured.kube import ApiError, Kube, load_config
from kured.lock import DaemonSetLock
from kured.lockformat import LockFormatError
from kured.metrics import Health, Metrics, MetricsServer
from kured.notify import Notifier
from kured.phases.base import (
    Seen,
)
from kured.phases.draining import DrainPhase
from kured.phases.rebooting import RebootPhase
from kured.phases.resuming import ResumePhase
from kured.phases.waiting import WaitPhase
from kured.phases.wakeups import Wakeups
from kured.policy import (
    PROGRESS_ANNOTATION,
    Decision,
    Step,
    decide,
)

log = logging.getLogger("kured")

ERROR_RETRY_SECONDS = 5.0
HEALTH_STUCK_SECONDS = 180.0  # one evaluation: a few bounded API calls and checks


class Agent(WaitPhase, DrainPhase, RebootPhase, ResumePhase, Wakeups):
    """One node's reboot coordinator."""

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

    async def run(self) -> None:
        """Forever: decide, act, wait as long as the step allows."""
        await self._join_lock_group()
        async with asyncio.TaskGroup() as tasks:
            lock, lock_tasks = self.lock, self._follow_lock(tasks)
            if not self.config.poll_only:
                tasks.create_task(self._watch_holders())
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
                if self.lock is not lock:  # the node moved to another lock group
                    for task in lock_tasks:
                        task.cancel()
                    lock, lock_tasks = self.lock, self._follow_lock(tasks)
                if pause:
                    await self._sleep(pause)

    def _follow_lock(self, tasks: asyncio.TaskGroup) -> list[asyncio.Task[None]]:
        """Keep this node's lock alive (Lease renewals) and watch it."""
        started = [tasks.create_task(self.lock.keep_alive())]
        if not self.config.poll_only:
            started.append(tasks.create_task(self._watch_lock()))
        return started

    async def _join_lock_group(self) -> None:
        """``--lock-group-label``: the node's label value picks its lock (at start; later
        changes are followed by :meth:`_follow_lock_group`)."""
        if not self.config.lock_group_label:
            return
        while (node := await self._kube.get_node(self.node_id)) is None:
            log.error("Node %s not found; waiting for it to be registered", self.node_id)
            await asyncio.sleep(ERROR_RETRY_SECONDS)
        self._join_group(self._group_of(node))

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
