"""What every benchmark scenario shares (:mod:`kured_testbed.bench` runs them): the sizes,
the control plane and its clients, fleets of their own, the benchmark's own watch of a
roll, kured installed without daemons, and one roll followed to its end and judged by the
audit checker (:mod:`kured_testbed.audit_check`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Namespace, Node
from lightkube.types import PatchType

from kured.policy import STATUS_ANNOTATION, Phase
from kured_testbed import audit_check
from kured_testbed.api import Fleet, FleetConfig, audit_events, default_manifests, wait_until
from kured_testbed.benchmath import node_phases, phases_json, requests_total, roll_figures
from kured_testbed.controlplane import ControlPlane
from kured_testbed.manifests import (
    apply_manifests,
    load_manifests,
    service_account_kubeconfig,
    service_account_of,
)
from kured_testbed.rollwatch import Roll, following
from kured_testbed.state import SandboxError, UsageError
from kured_testbed.timeline import draw

SCENARIOS = ("idle", "detect", "makespan", "scale")
MODES = ("ours", "polling")
MIB = 1024 * 1024
POLL = 0.1  # seconds between looks at what the watches have seen


class BenchFailed(SandboxError):
    """A scenario could not be measured (a roll stuck, a watch or the agents died)."""


@dataclass(frozen=True)
class Settings:
    """Every size of the benchmark; the defaults are the issue's."""

    nodes: int = 12
    concurrency: tuple[int, ...] = (1, 3)
    reboot_seconds: float = 5.0
    stop_seconds: float = 2.0  # the workload's graceful stop
    poll_period: str = "1m"
    idle_seconds: float = 120.0
    settle_seconds: float = 10.0  # after the daemons' first report, before an idle window
    scale_nodes: tuple[int, ...] = (100,)  # 1000 in bench-full only, see bench/README.md
    scale_concurrency: int = 10  # per zone (--lock-group-label)
    scale_idle_seconds: float = 120.0  # two polling periods: agents started together poll together
    scale_poll_seconds: float = 150.0  # of the polling roll
    timeout: float = 3600.0  # for any one wait (a roll, the daemons' first report)
    scenarios: tuple[str, ...] = SCENARIOS
    modes: tuple[str, ...] = MODES  # the makespan rolls' daemons
    serial_rolls: bool = False  # polling's makespan rolls after ours', not beside them

    def __post_init__(self) -> None:
        """A roll that cordons every node at once deadlocks on the workload's budgets (the
        evicted pods have nowhere to go), so each concurrency must leave a node free."""
        for concurrency, nodes in (
            *((c, self.nodes) for c in self.concurrency),
            *((self.scale_concurrency, n) for n in self.scale_nodes if "scale" in self.scenarios),
        ):
            if concurrency >= nodes:
                raise UsageError(f"concurrency {concurrency} must be below the {nodes} nodes")

    def flags(self, mode: str, concurrency: int) -> list[str]:
        """Ours reacts to events (the period is only a fallback); polling is Go kured's
        timing: act only every period, no lock watch, no sentinel checks in between."""
        if mode == "ours":
            return ["--period=1h", f"--concurrency={concurrency}"]
        return ["--poll-only", f"--period={self.poll_period}", f"--concurrency={concurrency}"]


@dataclass
class Watch:
    """A fleet as its Node and lock watches show it (:class:`kured_testbed.rollwatch.Roll`)."""

    roll: Roll
    check: Callable[[], None]  # raises if a watch, or a task the run depends on, ended
    within: float

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        async def met() -> bool:
            self.check()
            return condition()

        await wait_until(met, what=what, within=self.within, interval=POLL)

    def reported(self) -> bool:
        """Every node's daemon has published its status: its first evaluation is done."""
        return self.roll.synced and all(view.activity for view in self.roll.views.values())

    def settled(self, node: str) -> bool:
        """The node is back in service and kured let go of it."""
        view = self.roll.views[node]
        return self.roll.done(node) and view.phase is Phase.IDLE and not self.roll.holders


@dataclass
class Bench:
    """What every scenario needs: the control plane, clients, settings, where results go."""

    plane: ControlPlane
    client: AsyncClient
    http: httpx2.AsyncClient  # raw requests as the admin: /metrics, /version
    settings: Settings
    out: Path
    say: Callable[[str], None]
    depends_on: list[asyncio.Task[Any]] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def fleet(self, name: str, nodes: int) -> AsyncIterator[Fleet]:
        """A fleet of its own for a scenario, stopped and deleted after it."""
        config = FleetConfig(name, nodes, reboot_seconds=self.settings.reboot_seconds)
        self.say(f"{name}: starting {nodes} nodes")
        fleet = await Fleet.start(self.plane, self.client, config, kured_namespace=f"{name}-kured")
        try:
            yield fleet
        finally:
            await fleet.stop()

    async def workload(self, fleet: Fleet) -> None:
        await fleet.workload(stop_seconds=self.settings.stop_seconds, within=self.settings.timeout)

    async def run_kured(self, fleet: Fleet, flags: list[str]) -> None:
        """Daemons on every node, as the DaemonSet's ServiceAccount (the repo's RBAC)."""
        await fleet.run_kured(flags, manifests=default_manifests(), as_serviceaccount=True)

    @contextlib.asynccontextmanager
    async def watching(self, fleet: Fleet) -> AsyncIterator[Watch]:
        roll = Roll(fleet.config)
        async with following(self.client, roll, fleet.kured_namespace, asyncio.Event()) as check:

            def all_alive() -> None:
                check()
                for task in self.depends_on:
                    if task.done():
                        raise BenchFailed(f"{task.get_name()} ended: {task.result()}")

            yield Watch(roll, all_alive, self.settings.timeout)

    async def metrics_total(self) -> float:
        response = await self.http.get("/metrics")
        response.raise_for_status()
        return requests_total(response.text)


# --- kured without daemons, and its identity ----------------------------------------------------


def kured_user(namespace: str) -> str:
    """Who kured's daemons are in the audit log: the DaemonSet's ServiceAccount."""
    account = service_account_of(load_manifests(default_manifests()))
    return f"system:serviceaccount:{namespace}:{account}"


async def install_kured(fleet: Fleet) -> Path:
    """kured's RBAC and DaemonSet (the lock's home) without starting daemons, as run-kured
    --as-serviceaccount installs them; returns the ServiceAccount's kubeconfig."""
    objects = load_manifests(default_manifests())
    namespace = fleet.kured_namespace
    fleet.namespaces.add(namespace)
    fleet.cluster_objects |= set(
        await apply_manifests(fleet.client, objects, namespace, fleet.name)
    )
    account = service_account_of(objects)
    return await service_account_kubeconfig(fleet.client, fleet.plane, namespace, account)


async def forget_status(client: AsyncClient, fleet: Fleet) -> None:
    """Remove kured's status from the Nodes, so the next daemons' first report can be seen."""
    patch = {"metadata": {"annotations": {STATUS_ANNOTATION: None}}}
    for name in fleet.nodes:
        await client.patch(Node, name, patch, patch_type=PatchType.MERGE)


# --- rolls ---------------------------------------------------------------------------------------


def invariant(
    fleet: Fleet,
    concurrency: int,
    triggered: float,
    seen: Roll,
    groups: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The audit checker's verdict on a roll (kured_testbed.audit_check): never more than
    concurrency nodes cordoned by kured or down (in each of the lock's groups: node → group),
    one reboot per node, nothing left behind."""
    nodes = tuple(fleet.nodes)
    events = list(audit_events(fleet.state))
    roll = audit_check.Roll(
        nodes=nodes,
        kured_user=kured_user(fleet.kured_namespace),
        concurrency=concurrency,
        triggered=dict.fromkeys(nodes, triggered),
        pre_cordoned=frozenset(),
        reboots={
            node: [audit_check.Reboot(r["down"], r["time"]) for r in fleet.reboots(node)]
            for node in nodes
        },
        writes=audit_check.node_writes(events, nodes),
        deleted={},
        final={
            node: audit_check.FinalNode(view.unschedulable, view.phase is not Phase.IDLE)
            for node, view in seen.views.items()
        },
        lock_holders=seen.holders,
        end=time.time(),
        groups=groups or {},
    )
    verdict = audit_check.check(roll)
    return {
        "held": not verdict.violations and not verdict.stuck,
        "most_unavailable": verdict.most_unavailable,
        "violations": list(verdict.violations),
        "stuck": list(verdict.stuck),
    }


async def roll(
    bench: Bench,
    fleet: Fleet,
    concurrency: int,
    chart: str,
    lock_groups: tuple[int, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """Trigger every node at once and follow the roll to its end: its figures, the audit
    checker's verdict, and its Gantt chart in <out>/<chart>.png. With lock_groups (the
    slots per group, node → group), concurrency is every group's slots together and the
    checker holds each group to its own."""
    async with bench.watching(fleet) as watch:
        await watch.until(watch.reported, "every daemon's first report")
        began, wall = time.monotonic(), time.time()
        watch.roll.begin(began)
        fleet.trigger()
        await watch.until(lambda: watch.roll.finished, f"the roll of {fleet.name}")
    phases = node_phases(watch.roll.timelines, began)
    figures = roll_figures(phases, concurrency, watch.roll.most_cordoned)
    title = (
        f"{chart}: {figures.nodes} nodes, c={concurrency} · makespan {figures.makespan:.1f} s, "
        f"limit {figures.limit:.1f} s, ratio {figures.ratio:.2f}"
    )
    draw(bench.out / f"{chart}.png", title, phases, figures.limit)
    bench.say(title)
    per_group, groups = lock_groups or (concurrency, {})
    verdict = invariant(fleet, per_group, wall, watch.roll, groups)
    return figures.to_json() | {"invariant": verdict, "phases": phases_json(phases)}


async def quiet(bench: Bench) -> None:
    """Settle, then wait until no namespace is being deleted (the namespace controller's
    clean-up passes would count as requests in a window)."""
    await asyncio.sleep(bench.settings.settle_seconds)

    async def none_terminating() -> bool:
        namespaces = bench.client.list(Namespace)
        return not [ns async for ns in namespaces if ns.status and ns.status.phase == "Terminating"]

    within = bench.settings.timeout
    await wait_until(none_terminating, what="namespaces deleted", within=within, interval=1.0)
