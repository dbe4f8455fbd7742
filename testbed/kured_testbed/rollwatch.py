"""A roll of reboots through a fleet, measured from outside the daemons.

kured's own logs say what it meant to do; this says what the cluster showed, which is what
an operator (and the demo's table) cares about. A :class:`Roll` is fed the fleet's Nodes and
kured's DaemonSet as watch events arrive and keeps, per node, when it was cordoned, went
NotReady, came back Ready with a new boot id and was uncordoned, plus the most nodes that
were cordoned at once. It does no I/O, so its rules are unit-tested; :func:`following` runs
the two watches that feed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from lightkube import AsyncClient
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.core_v1 import Node

from kured.config import DEFAULT_LOCK_ANNOTATION
from kured.ctl.model import AgentStatus
from kured.facts import annotations_of
from kured.lockformat import LockFormatError, parse
from kured.policy import PROGRESS_ANNOTATION, STATUS_ANNOTATION, Phase, Progress
from kured_testbed.fleet import FleetConfig
from kured_testbed.state import FLEET_LABEL, SandboxError

DAEMONSET = "kured"  # the name deploy/daemonset.yaml gives it


@dataclass(frozen=True)
class NodeView:
    """One Node as the cluster shows it now."""

    name: str
    ready: bool
    unschedulable: bool
    boot_id: str
    phase: Phase  # kured.dev/progress (idle when absent)
    activity: str  # kured.dev/status's activity ("" before the daemon reports)

    @classmethod
    def of(cls, node: Node) -> NodeView:
        annotations = annotations_of(node)
        status = node.status
        conditions = (status.conditions if status else None) or []
        agent = AgentStatus.parse(annotations.get(STATUS_ANNOTATION))
        return cls(
            name=str(node.metadata.name if node.metadata else ""),
            ready=any(c.type == "Ready" and c.status == "True" for c in conditions),
            unschedulable=bool(node.spec and node.spec.unschedulable),
            boot_id=str(status.nodeInfo.bootID if status and status.nodeInfo else ""),
            phase=Progress.from_json(annotations.get(PROGRESS_ANNOTATION)).phase,
            activity=agent.activity if agent else "",
        )


def _between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


@dataclass
class NodeTimeline:
    """When (time.monotonic()) each step of one node's reboot showed in the cluster. Steps
    are taken in order, so a node cordoned by hand after its reboot changes nothing."""

    first_boot: str = ""
    boot: str = ""
    reboots: int = 0  # boot id changes seen
    cordoned: float | None = None  # drain starts
    down: float | None = None  # NotReady: the reboot starts
    up: float | None = None  # Ready again with a new boot id
    uncordoned: float | None = None  # back in service

    def see(self, view: NodeView, now: float) -> None:
        if not self.first_boot:
            self.first_boot = self.boot = view.boot_id
        elif view.boot_id != self.boot:
            self.boot = view.boot_id
            self.reboots += 1
        if self.cordoned is None and view.unschedulable:
            self.cordoned = now
        if self.cordoned is not None and self.down is None and not view.ready:
            self.down = now
        if self.down is not None and self.up is None and view.ready and self.reboots:
            self.up = now
        if self.up is not None and self.uncordoned is None and not view.unschedulable:
            self.uncordoned = now

    @property
    def done(self) -> bool:
        return self.uncordoned is not None

    @property
    def drain(self) -> float | None:
        return _between(self.cordoned, self.down)

    @property
    def reboot(self) -> float | None:
        return _between(self.down, self.up)

    @property
    def back_ready(self) -> float | None:
        """From Ready again to uncordoned: kured noticing the new boot and letting pods in."""
        return _between(self.up, self.uncordoned)

    @property
    def total(self) -> float | None:
        return _between(self.cordoned, self.uncordoned)


class Roll:
    """Everything seen of one fleet's roll so far."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.nodes = config.node_names()
        self.views: dict[str, NodeView] = {}
        self.timelines = {name: NodeTimeline() for name in self.nodes}
        self.labels: dict[str, tuple[str, float]] = {}  # label shown, since when
        self.holders: tuple[str, ...] = ()
        self.most_cordoned = 0
        self.began: float | None = None
        self.finished_at: float | None = None

    @property
    def synced(self) -> bool:
        """Every node has been seen, so boot ids before the roll are known."""
        return len(self.views) == len(self.nodes)

    def begin(self, now: float) -> None:
        self.began = now
        self.labels = {name: (self.label(name), now) for name in self.views}

    def see_node(self, node: Node, now: float) -> None:
        view = NodeView.of(node)
        if view.name not in self.timelines:
            return
        self.views[view.name] = view
        self.timelines[view.name].see(view, now)
        cordoned = sum(v.unschedulable for v in self.views.values())
        self.most_cordoned = max(self.most_cordoned, cordoned)
        self._update(now)

    def see_lock(self, event: str, ds: DaemonSet, now: float) -> None:
        """The holders of the lock, and of each --lock-group-label group's lock
        (``<annotation>-<group>``, on the same DaemonSet)."""
        annotations = {} if event == "DELETED" else annotations_of(ds)
        holders: list[str] = []
        for key, text in sorted(annotations.items()):
            if key == DEFAULT_LOCK_ANNOTATION or key.startswith(f"{DEFAULT_LOCK_ANNOTATION}-"):
                try:
                    holders += parse(text).holders()
                except LockFormatError as error:
                    holders.append(f"<{key}: {error}>")
        self.holders = tuple(holders)
        self._update(now)

    def _update(self, now: float) -> None:
        if self.began is None:
            return
        for name in self.views:
            label = self.label(name)
            if self.labels.get(name, ("", 0.0))[0] != label:
                self.labels[name] = (label, now)
        if self.finished_at is None and self._finished():
            self.finished_at = now

    def _finished(self) -> bool:
        """Every node rebooted and is back in service, and kured let go of all of them."""
        return (
            all(line.done for line in self.timelines.values())
            and all(view.phase is Phase.IDLE for view in self.views.values())
            and not self.holders
        )

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def wall_time(self) -> float | None:
        return _between(self.began, self.finished_at)

    @property
    def reboots(self) -> int:
        return sum(line.reboots for line in self.timelines.values())

    def label(self, name: str) -> str:
        """One word for where a node is: what the cluster shows first, then what kured
        recorded (its progress phase, then its last activity)."""
        view = self.views.get(name)
        if view is None:
            return "unseen"
        if not view.ready:
            return "down"
        if view.phase is Phase.REBOOTING and self.timelines[name].up is not None:
            return "back up"  # kured has yet to see the new boot id
        if view.phase is not Phase.IDLE:
            return view.phase.value
        if self.timelines[name].done:
            return "done"
        return view.activity or "idle"

    def describe(self) -> str:
        """Where the roll stands, in one line (for a timeout)."""
        pending = [f"{name} {self.label(name)}" for name in self.nodes if not self.done(name)]
        lock = ", ".join(self.holders) or "free"
        return f"{', '.join(pending) or 'every node done'}; lock: {lock}"

    def done(self, name: str) -> bool:
        return self.timelines[name].done


@contextlib.asynccontextmanager
async def following(
    client: AsyncClient, roll: Roll, kured_namespace: str, changed: asyncio.Event
) -> AsyncIterator[Callable[[], None]]:
    """Watch the fleet's Nodes and kured's DaemonSet into roll, setting changed on every
    event. Yields a check that raises if a watch has failed (the caller polls it)."""

    async def nodes() -> None:
        async for _event, node in client.watch(Node, labels={FLEET_LABEL: roll.config.name}):
            roll.see_node(node, time.monotonic())
            changed.set()

    async def lock() -> None:
        async for event, ds in client.watch(
            DaemonSet, namespace=kured_namespace, fields={"metadata.name": DAEMONSET}
        ):
            roll.see_lock(event, ds, time.monotonic())
            changed.set()

    tasks = [asyncio.create_task(nodes()), asyncio.create_task(lock())]

    def check() -> None:
        for task in tasks:
            if task.done():
                task.result()  # raises the watch's error
                raise SandboxError("a watch ended")

    try:
        yield check
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
