"""The faults the chaos run injects into a roll, while it runs.

* ``kill:<boundary>``: SIGKILL a node's daemon (its supervisor restarts it, as a DaemonSet
  would) the moment it reaches a phase boundary, seen in its log (Go kured's lines) or, for
  ``after-drain``, in its Node's ``kured.dev/progress`` record; once per node and boundary;
* ``kill:random``: SIGKILL a random node's daemon at a random moment;
* ``restart:etcd``, ``restart:kube-apiserver``: crash one (SIGKILL) and start it again;
* ``delete-holder``: delete the Node of a lock holder mid-drain or mid-reboot, as a cloud
  removing the machine would (its daemon then finds no Node and does nothing);
* ``garbage-lock``: garbage in the lock (the annotation backend: text that is no lock; the
  Lease backend: a Lease held by a node that does not exist, or a holder's renewal time
  thrown into the past);
* ``clock-jump``: one node's wall clock jumps (:mod:`kured_testbed.clockskew`).

A :class:`Plan` says which, drawn from the run's seed; :class:`Chaos` injects them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node

from kured_testbed import clockskew
from kured_testbed.api import Fleet
from kured_testbed.controlplane import ControlPlane
from kured_testbed.state import FLEET_LABEL, SandboxError

DAEMONSET = "kured"
LOCK_ANNOTATION = "weave.works/kured-node-lock"
LOCK_LEASE_LABEL = "kured.dev/lock"
PROGRESS_ANNOTATION = "kured.dev/progress"
ANNOTATION_BACKEND, LEASE_BACKEND = "daemonset-annotation", "lease"

# Where a daemon is when it logs these (Go kured's lines, kured.agent and kured.drain).
BOUNDARY_LINES = {
    "before-lock": 'msg="Reboot required"',
    "after-lock": 'msg="Acquired reboot lock"',
    "mid-cordon": 'msg="Draining node ',
    "mid-drain": 'msg="Evicting pod ',
    "just-before-reboot": 'msg="Commanding reboot"',
    "after-reboot-before-uncordon": 'msg="Holding lock"',
    "before-release": 'msg="Releasing lock"',
}
AFTER_DRAIN = "after-drain"  # the progress record says "rebooting": drained, not yet rebooted
BOUNDARIES = (*list(BOUNDARY_LINES)[:4], AFTER_DRAIN, *list(BOUNDARY_LINES)[4:])
GARBAGE = (
    "}{ not a lock",
    "[1, 2, 3]",
    "null",
    '{"maxOwners": 2, "locks": "everyone"}',
    '{"nodeID": 7}',
    '{"nodeID": "n1", "created": "yesterday", "TTL": 0}',
)
CLOCK_JUMPS = (3600.0, -1200.0)  # an hour ahead, twenty minutes behind
POLL_SECONDS = 0.25
# What an API call may raise while the control plane restarts: try again later.
API_ERRORS = (ApiError, httpx2.HTTPError, OSError)
LOG_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Plan:
    """The faults of one roll."""

    boundaries: dict[str, frozenset[str]]  # node → where to kill its daemon
    random_kills: int = 0
    restart: str = ""  # "etcd", "kube-apiserver" or "" for none
    delete_holder: bool = False
    garbage: bool = False
    clock_jump: float = 0.0
    clock_node: str = ""

    @classmethod
    def draw(
        cls,
        rng: random.Random,
        nodes: list[str],
        *,
        kill_chance: float,
        restart: str,
        heavy: bool,
        clock: bool,
    ) -> Plan:
        """Kills at boundaries with kill_chance each, a few at random, the restart; when
        heavy, garbage in the lock, sometimes a node deletion, and (with the clock shim) a
        clock jump."""
        boundaries = {
            node: frozenset(b for b in BOUNDARIES if rng.random() < kill_chance) for node in nodes
        }
        return cls(
            boundaries=boundaries,
            random_kills=rng.randint(1, 3),
            restart=restart,
            delete_holder=heavy and rng.random() < 0.5,
            garbage=heavy,
            clock_jump=rng.choice(CLOCK_JUMPS) if heavy and clock else 0.0,
            clock_node=rng.choice(nodes),
        )


async def lock_holders(client: AsyncClient, namespace: str) -> list[str]:
    """Who the lock objects name (both backends), read without kured's code; an annotation
    that is not a lock is reported as such."""
    holders = []
    ds = await client.get(DaemonSet, DAEMONSET, namespace=namespace)
    text = ((ds.metadata.annotations if ds.metadata else None) or {}).get(LOCK_ANNOTATION)
    if text:
        holders += _annotation_holders(text)
    async for lease in client.list(Lease, namespace=namespace, labels={LOCK_LEASE_LABEL: None}):
        if lease.spec and lease.spec.holderIdentity:
            holders.append(lease.spec.holderIdentity)
    return holders


def _annotation_holders(text: str) -> list[str]:
    try:
        value = json.loads(text)
        entries = value.get("locks", [value]) if "maxOwners" in value else [value]
        return [str(e["nodeID"]) for e in entries if e.get("nodeID")]
    except (ValueError, AttributeError, TypeError, KeyError):
        return [f"<unreadable: {text[:40]}>"]


def progress_phase(node: Node) -> str:
    """The phase kured recorded on the Node ("idle" when none): for timing faults only."""
    text = ((node.metadata.annotations if node.metadata else None) or {}).get(PROGRESS_ANNOTATION)
    try:
        return str(json.loads(text or "{}").get("phase", "idle"))
    except (ValueError, AttributeError):
        return "idle"


@dataclass
class NodeWatch:
    """The fleet's Nodes as last listed (polled: an API server restart must not end it)."""

    client: AsyncClient
    fleet: str
    nodes: dict[str, Node] = field(default_factory=dict)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                listed = self.client.list(Node, labels={FLEET_LABEL: self.fleet})
                self.nodes = {str(n.metadata.name): n async for n in listed if n.metadata}
            await asyncio.sleep(POLL_SECONDS)


class Chaos:
    """Injects one roll's planned faults until stopped; counts what it injected."""

    def __init__(
        self,
        *,
        plane: ControlPlane,
        fleet: Fleet,
        backend: str,
        plan: Plan,
        rng: random.Random,
        watch: NodeWatch,
    ) -> None:
        self.plane = plane
        self.fleet = fleet
        self.client = fleet.client
        self.backend = backend
        self.plan = plan
        self.rng = rng
        self.watch = watch
        self.injected: Counter[str] = Counter()
        self.deleted: set[str] = set()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Every planned fault, concurrently; returns when all were injected or stopped."""
        plan = self.plan
        injectors: list[Awaitable[None]] = [
            self._kill_at_boundaries(node, set(where)) for node, where in plan.boundaries.items()
        ]
        injectors.append(self._kill_randomly(plan.random_kills))
        optional: list[tuple[object, Callable[[], Awaitable[None]]]] = [
            (plan.restart, self._restart),
            (plan.delete_holder, self._delete_holder),
            (plan.garbage, self._garbage),
            (plan.clock_jump, self._jump_clock),
        ]
        injectors += [inject() for wanted, inject in optional if wanted]
        await asyncio.gather(*injectors)

    def stop(self) -> None:
        self._stopping.set()

    async def _pause(self, seconds: float) -> bool:
        """Sleep; False when the roll is over meanwhile (inject nothing more)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return not self._stopping.is_set()

    def _kill(self, node: str, kind: str) -> None:
        if node in self.deleted:
            return
        with contextlib.suppress(SandboxError, ProcessLookupError):
            self.fleet.kill(node)
            self.injected[f"kill:{kind}"] += 1

    async def _kill_at_boundaries(self, node: str, where: set[str]) -> None:
        log = self.fleet.state.node(node).kured_log
        offset, pending = (log.stat().st_size if log.exists() else 0), ""
        while where and await self._pause(LOG_POLL_SECONDS):
            if AFTER_DRAIN in where and self._drained(node):
                where.discard(AFTER_DRAIN)
                self._kill(node, AFTER_DRAIN)
            offset, text = _read_from(log, offset)
            *lines, pending = (pending + text).split("\n")
            for boundary in [
                b for b in where if any(BOUNDARY_LINES.get(b, "\0") in x for x in lines)
            ]:
                where.discard(boundary)
                self._kill(node, boundary)

    def _drained(self, node: str) -> bool:
        seen = self.watch.nodes.get(node)
        return seen is not None and progress_phase(seen) == "rebooting"

    async def _kill_randomly(self, count: int) -> None:
        for _ in range(count):
            if not await self._pause(self.rng.uniform(2.0, 10.0)):
                return
            self._kill(self.rng.choice(self.fleet.nodes), "random")

    async def _restart(self) -> None:
        if await self._pause(self.rng.uniform(3.0, 20.0)):
            await asyncio.to_thread(self.plane.restart, self.plan.restart)
            self.injected[f"restart:{self.plan.restart}"] += 1

    async def _delete_holder(self) -> None:
        """Once a holder is draining or rebooting, its Node goes, as in a cloud."""
        if not await self._pause(self.rng.uniform(1.0, 15.0)):
            return
        while await self._pause(POLL_SECONDS):
            with contextlib.suppress(*API_ERRORS):
                holders = await lock_holders(self.client, self.fleet.kured_namespace)
                busy = [
                    name
                    for name in holders
                    if (node := self.watch.nodes.get(name)) is not None
                    and progress_phase(node) in ("draining", "rebooting")
                ]
                if busy:
                    victim = self.rng.choice(busy)
                    await self.client.delete(Node, victim)
                    self.deleted.add(victim)
                    self.injected["delete-holder"] += 1
                    return

    async def _garbage(self) -> None:
        if not await self._pause(self.rng.uniform(2.0, 30.0)):
            return
        write = (
            self._garbage_annotation if self.backend == ANNOTATION_BACKEND else self._garbage_lease
        )
        while await self._pause(POLL_SECONDS):
            with contextlib.suppress(*API_ERRORS):
                if await write():
                    self.injected["garbage-lock"] += 1
                    return

    async def _garbage_annotation(self) -> bool:
        patch = {"metadata": {"annotations": {LOCK_ANNOTATION: self.rng.choice(GARBAGE)}}}
        await self.client.patch(DaemonSet, DAEMONSET, patch, namespace=self.fleet.kured_namespace)
        return True

    async def _garbage_lease(self) -> bool:
        """A ghost holder in a Lease of the lock, or a real holder's renewal in the past."""
        namespace = self.fleet.kured_namespace
        leases = [
            lease
            async for lease in self.client.list(
                Lease, namespace=namespace, labels={LOCK_LEASE_LABEL: None}
            )
        ]
        held = [lease for lease in leases if lease.spec and lease.spec.holderIdentity]
        if not leases or (not held and self.rng.random() < 0.5):
            return False
        if held and self.rng.random() < 0.5:
            victim = self.rng.choice(held)
            assert victim.spec is not None
            victim.spec.renewTime = datetime(2000, 1, 1, tzinfo=UTC)
            await self.client.replace(victim)
            return True
        labels = (leases[0].metadata.labels if leases[0].metadata else None) or {}
        ghost = Lease(
            metadata=ObjectMeta(name=f"{DAEMONSET}-lock-ghost", namespace=namespace, labels=labels),
            spec=LeaseSpec(
                holderIdentity="ghost-node", leaseDurationSeconds=30, renewTime=datetime.now(UTC)
            ),
        )
        await self.client.create(ghost)
        return True

    async def _jump_clock(self) -> None:
        if await self._pause(self.rng.uniform(0.0, 10.0)):
            clockskew.jump(self.fleet.state.node(self.plan.clock_node), self.plan.clock_jump)
            self.injected["clock-jump"] += 1


def _read_from(path: Path, offset: int) -> tuple[int, str]:
    """What was appended to path since offset (and the new offset)."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            data = file.read()
    except FileNotFoundError:
        return offset, ""
    return offset + len(data), data.decode(errors="replace")
