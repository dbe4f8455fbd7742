"""What every phase of the agent shares: its state, the small effects on the Node, and the
wait between two evaluations (cut in slices that beat the health check, cut short by a
wake-up from :mod:`kured.phases.wakeups`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kured.blockers import Blocker
from kured.config import Config
from kured.drain import Drainer, DrainOptions
from kured.durations import format_go_duration
from kured.events import EventRecorder, Reason
from kured.host import Host
from kured.kube import DaemonSet, Kube, Node
from kured.lease import LeaseLock
from kured.lock import DaemonSetLock, Lock, LockView
from kured.metrics import Health, Metrics
from kured.need import RebootNeed
from kured.notify import Details, Notifier
from kured.policy import (
    HOLDER_LABEL,
    PROGRESS_ANNOTATION,
    Decision,
    Observation,
    Phase,
    Progress,
    Step,
)

log = logging.getLogger("kured")
REBOOT_IN_PROGRESS_ANNOTATION = "weave.works/kured-reboot-in-progress"
JITTER = 0.1
# How far apart nodes waiting for a slot wake when one frees: per node running kured, and
# at most (see Agent._on_lock_change).
SLOT_SPREAD_PER_NODE_SECONDS = 0.01
SLOT_SPREAD_MAX_SECONDS = 2.0
HEALTH_BEAT_SECONDS = 30.0


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


def fleet_size(ds: DaemonSet) -> int:
    """How many nodes run kured: the DaemonSet's desiredNumberScheduled (0 before the
    DaemonSet controller first counted them)."""
    return (ds.status.desiredNumberScheduled if ds.status else 0) or 0


def slot_spread(nodes: int) -> float:
    """The spread of waiting nodes' wake-ups: 10 ms per node that runs kured, at most 2 s.
    That keeps the herd that wakes before the winner's write is seen (W × the write's
    latency / spread) to a few nodes, and the wait for the first waker (spread / W) to
    about 10 ms while most nodes wait, a few tenths of a second for the last few."""
    return min(SLOT_SPREAD_MAX_SECONDS, max(nodes, 1) * SLOT_SPREAD_PER_NODE_SECONDS)


def compact_json(value: dict[str, Any]) -> str:
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


async def sleep_for(seconds: float) -> None:
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


class AgentBase:
    """One node's agent: the state its phases share, and their small effects."""

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
        self._fleet_size = 0  # nodes running kured, as the DaemonSet last said
        self._fleet_read = asyncio.Event()  # set at each reading of _fleet_size
        self._last_sentinel: bool | None = None
        self._status: dict[str, Any] = {}  # what kured.dev/status says (as last read or written)
        self._status_changed = False
        self._block_kind = ""  # which blocker said no in the last observation
        self._last_block = ""  # what blocked the last decision (the blocked metric's kind)
        self._lock_holders: frozenset[str] = frozenset()  # as the lock watch last told
        self._freeing: set[asyncio.Task[None]] = set()  # freeing deleted holders' slots
        self._wanting_since: float | None = None  # when the node started waiting for the lock
        self._dry_run_told = ""  # the last --dry-run plan notified (sent again when it changes)
        self._gate_told = False  # the gate timeout has been announced (once per timeout)
        self.lock = make_lock(config, kube)
        self._lock_group = ""  # the --lock-group-label value self.lock is for
        self._group_seen = ""  # that label's value as the node watch last saw it
        self._drainer = Drainer(kube, DrainOptions.from_config(config))
        # When this agent first saw each lock holder in its present state (monotonic clock).
        self._holders_seen: dict[tuple[object, ...], float] = {}

    def _details(self, seen: Seen, reason: str = "", lasted: timedelta | None = None) -> Details:
        """A message's placeholders: the reason (the reboot's, unless another is given),
        how long the state lasted, the packages that asked for the reboot."""
        seconds = timedelta(seconds=int(lasted.total_seconds())) if lasted is not None else None
        return Details(
            reason=reason or seen.obs.reboot_reason,
            duration=format_go_duration(seconds) if seconds is not None else "",
            packages=", ".join(seen.need.packages),
        )

    def _reboot_how(self) -> str:
        if self.config.reboot_method == "signal":
            return f"signal {self.config.reboot_signal} to PID 1"
        return " ".join(self.config.reboot_command)

    async def _uncordon(self, decision: Decision, seen: Seen) -> None:
        if decision.uncordon:
            log.info("Uncordoning node %s", self.node_id)
            await self._kube.set_unschedulable(self.node_id, False)
            await self._events.record(seen.node, Reason.UNCORDONED, f"Uncordoned {self.node_id}")

    async def _record(self, phase: Phase, unschedulable_before: bool) -> None:
        """Write the progress record before the effect it announces, with the holder label
        (in the same patch: no request of its own) that waiting nodes watch."""
        progress = Progress(phase, self._host.boot_id(), unschedulable_before, now_rfc3339())
        annotations = {PROGRESS_ANNOTATION: progress.to_json()}
        meta = {"annotations": annotations, "labels": {HOLDER_LABEL: "true"}}
        await self._kube.patch_node(self.node_id, {"metadata": meta})

    async def _drop_holder_label(self) -> None:
        await self._kube.patch_node(self.node_id, {"metadata": {"labels": {HOLDER_LABEL: None}}})

    async def _annotate(self, annotations: dict[str, str | None]) -> None:
        await self._kube.patch_node(self.node_id, {"metadata": {"annotations": annotations}})

    async def _set_labels(self, labels: tuple[tuple[str, str], ...]) -> None:
        if labels:
            await self._kube.patch_node(self.node_id, {"metadata": {"labels": dict(labels)}})

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
