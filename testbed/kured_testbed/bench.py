"""`make bench`: how fast kured rolls reboots through a sandbox fleet, how little it asks of the
API server when there is nothing to do, how much memory a daemon takes, and whether it holds
with 200 agents. Measured from outside the daemons; written to bench/results (latest.json,
latest.md, one Gantt chart per roll). bench/README.md defines every figure.

    python -m kured_testbed.bench [--nodes 12] [--concurrency 1 3] [--idle-seconds 600] …

One control plane; each scenario on fleets of its own, stopped when it ends, in this order
(idle first: deleting the other scenarios' namespaces keeps the controllers busy for a while):

idle      kube-apiserver's requests with nothing to do: without daemons (the baseline), with
          ours, with polling; then the RSS of each of our daemons
detect    one node at a time, the lock free: sentinel created → node cordoned
makespan  every node triggered at once, for each c: ours (``--period=1h``: the lock watch
          hands over) and ours in Go kured's timing (``--poll-only --period=1m``)
scale     200 agents in one process (:mod:`kured_testbed.manyagents`), checked against the
          API server's audit log
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx2
from lightkube import AsyncClient
from lightkube.config.client_adapter import AsyncClient as http_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Namespace, Node
from lightkube.types import PatchType

import kured
from kured.phases.wakeups import SENTINEL_POLL_SECONDS
from kured.policy import STATUS_ANNOTATION, Phase
from kured_testbed import audit_check, procs
from kured_testbed.api import Fleet, FleetConfig, audit_events, default_manifests, wait_until
from kured_testbed.benchmath import (
    IncompleteRoll,
    audit_requests,
    distribution,
    node_phases,
    per_node_hour,
    phases_json,
    requests_total,
    roll_figures,
)
from kured_testbed.benchreport import machine, write
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

PROG = "kured-bench"
SCENARIOS = ("idle", "detect", "makespan", "scale")
MODES = ("ours", "polling")
RESULTS = Path(kured.__file__).resolve().parents[2] / "bench" / "results"
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
    idle_seconds: float = 600.0
    settle_seconds: float = 10.0  # after the daemons' first report, before an idle window
    scale_agents: int = 200
    scale_concurrency: int = 5
    timeout: float = 3600.0  # for any one wait (a roll, the daemons' first report)
    scenarios: tuple[str, ...] = SCENARIOS
    modes: tuple[str, ...] = MODES  # the makespan rolls' daemons

    def __post_init__(self) -> None:
        """A roll that cordons every node at once deadlocks on the workload's budgets (the
        evicted pods have nowhere to go), so each concurrency must leave a node free."""
        for concurrency, nodes in (
            *((c, self.nodes) for c in self.concurrency),
            (self.scale_concurrency, self.scale_agents),
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


def invariant(fleet: Fleet, concurrency: int, triggered: float, seen: Roll) -> dict[str, Any]:
    """The audit checker's verdict on a roll (kured_testbed.audit_check): never more than
    concurrency nodes cordoned by kured or down, one reboot per node, nothing left behind."""
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
    )
    verdict = audit_check.check(roll)
    return {
        "held": not verdict.violations and not verdict.stuck,
        "most_unavailable": verdict.most_unavailable,
        "violations": list(verdict.violations),
        "stuck": list(verdict.stuck),
    }


async def roll(bench: Bench, fleet: Fleet, concurrency: int, chart: str) -> dict[str, Any]:
    """Trigger every node at once and follow the roll to its end: its figures, the audit
    checker's verdict, and its Gantt chart in <out>/<chart>.png."""
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
    verdict = invariant(fleet, concurrency, wall, watch.roll)
    return figures.to_json() | {"invariant": verdict, "phases": phases_json(phases)}


# --- the scenarios ------------------------------------------------------------------------------


async def makespan(bench: Bench) -> dict[str, Any]:
    """Ours and polling (or the --modes chosen) side by side, for each concurrency, each on a
    fresh fleet."""
    settings = bench.settings
    rolls: dict[str, dict[str, Any]] = {mode: {} for mode in settings.modes}
    for mode in settings.modes:
        for concurrency in settings.concurrency:
            name = f"{mode}-c{concurrency}"
            flags = settings.flags(mode, concurrency)
            async with bench.fleet(name, settings.nodes) as fleet:
                await bench.workload(fleet)
                await bench.run_kured(fleet, flags)
                figures = await roll(bench, fleet, concurrency, f"makespan-{name}")
            rolls[mode][f"c={concurrency}"] = figures | {"kured_args": flags}
    return {"makespan_ratio": rolls}


async def _detect_once(watch: Watch, fleet: Fleet, node: str) -> float:
    """One sample: the node's sentinel created at a random moment of its daemon's sentinel
    check cycle (where it polls; with inotify the moment does not matter), then seconds until
    the node shows cordoned; waits until it is done."""
    await asyncio.sleep(random.uniform(0, SENTINEL_POLL_SECONDS))
    line = watch.roll.timelines[node]
    created = time.monotonic()
    fleet.trigger(node)
    await watch.until(lambda: line.cordoned is not None, f"{node} cordoned")
    cordoned = line.cordoned
    await watch.until(lambda: watch.settled(node), f"{node} back in service")
    assert cordoned is not None
    return cordoned - created


async def detect(bench: Bench) -> dict[str, Any]:
    """One node at a time (so the lock is always free): one sample per node."""
    flags = bench.settings.flags("ours", 1)
    async with bench.fleet("detect", bench.settings.nodes) as fleet:
        await bench.run_kured(fleet, flags)
        async with bench.watching(fleet) as watch:
            await watch.until(watch.reported, "every daemon's first report")
            samples = [await _detect_once(watch, fleet, node) for node in fleet.nodes]
    bench.say(f"detect: median {statistics.median(samples):.2f} s")
    return {"detect_to_cordon_seconds": distribution(samples) | {"kured_args": flags}}


async def _quiet(bench: Bench) -> None:
    """Settle, then wait until no namespace is being deleted (the namespace controller's
    clean-up passes would count as requests in a window)."""
    await asyncio.sleep(bench.settings.settle_seconds)

    async def none_terminating() -> bool:
        namespaces = bench.client.list(Namespace)
        return not [ns async for ns in namespaces if ns.status and ns.status.phase == "Terminating"]

    within = bench.settings.timeout
    await wait_until(none_terminating, what="namespaces deleted", within=within, interval=1.0)


async def _idle_window(bench: Bench, fleet: Fleet) -> tuple[float, dict[str, int]]:
    """kube-apiserver's request counter over one window, and kured's requests in it by the
    audit log (per "verb resource")."""
    await _quiet(bench)
    before, start = await bench.metrics_total(), time.time()
    await asyncio.sleep(bench.settings.idle_seconds)
    after, end = await bench.metrics_total(), time.time()
    user = kured_user(fleet.kured_namespace)
    by_request = audit_requests(audit_events(fleet.state), user, start, end)
    return after - before, dict(by_request.most_common())


def daemon_rss(fleet: Fleet) -> dict[str, Any]:
    """VmRSS of each node's daemon, in MiB."""
    per_node = {
        node: size / MIB
        for node in fleet.nodes
        if (pid := fleet.daemon_pid(node)) is not None
        and (size := procs.rss_bytes(pid)) is not None
    }
    if not per_node:
        raise BenchFailed("no daemon was running to measure")
    sizes = list(per_node.values())
    return {
        "median": round(statistics.median(sizes), 1),
        "max": round(max(sizes), 1),
        "per_node": {node: round(size, 1) for node, size in per_node.items()},
    }


async def idle(bench: Bench) -> dict[str, Any]:
    """Three windows of the same length on one fleet: no daemons, ours, polling."""
    settings = bench.settings

    def rate(requests: float) -> float:
        return round(per_node_hour(requests, settings.nodes, settings.idle_seconds), 1)

    rss: dict[str, Any] = {}
    async with bench.fleet("idle", settings.nodes) as fleet:
        await bench.workload(fleet)
        await install_kured(fleet)
        bench.say(f"idle: baseline without kured, {settings.idle_seconds:g} s")
        baseline, _ = await _idle_window(bench, fleet)
        figures: dict[str, Any] = {
            "window_seconds": settings.idle_seconds,
            "nodes": settings.nodes,
            "baseline_requests": baseline,
        }
        async with bench.watching(fleet) as watch:
            for mode in MODES:
                flags = settings.flags(mode, 1)
                await bench.run_kured(fleet, flags)
                await watch.until(watch.reported, "every daemon's first report")
                bench.say(f"idle: {mode}, {settings.idle_seconds:g} s")
                total, by_request = await _idle_window(bench, fleet)
                figures[mode] = {
                    "audit": rate(sum(by_request.values())),
                    "apiserver_metrics": rate(total - baseline),
                    "apiserver_requests": total,
                    "kured_requests": by_request,
                    "kured_args": flags,
                }
                if mode == "ours":
                    rss = daemon_rss(fleet)
                await fleet.stop_kured()
                await forget_status(bench.client, fleet)
    return {"idle_requests_per_node_hour": figures, "rss_mib": rss}


@contextlib.asynccontextmanager
async def many_agents(bench: Bench, fleet: Fleet, flags: list[str]) -> AsyncIterator[int]:
    """An agent for every node of fleet, all in one process of their own
    (:mod:`kured_testbed.manyagents`), as kured's ServiceAccount; yields its PID and stops it
    by that PID at the end. The roll fails at once if the process exits."""
    kubeconfig = await install_kured(fleet)
    state = fleet.state
    pid_file = state.pid_file("bench-agents")
    argv = [sys.executable, "-m", "kured_testbed.manyagents", "--state-dir", str(state.root)]
    argv += ["--fleet", fleet.name, "--kubeconfig", str(kubeconfig), "--", *flags]
    proc = procs.spawn(argv, log=state.log_file("bench-agents"), pid_file=pid_file)
    exited = asyncio.create_task(procs.wait_exit(proc), name="the agents' process (exit code)")
    bench.depends_on.append(exited)
    try:
        yield proc.pid
    finally:
        bench.depends_on.remove(exited)
        exited.cancel()
        await asyncio.to_thread(procs.stop_pid_files, [pid_file])


async def scale(bench: Bench) -> dict[str, Any]:
    """Many agents in one process against one fleet; the roll checked like the others, and
    the memory those agents take."""
    settings = bench.settings
    concurrency = settings.scale_concurrency
    async with bench.fleet("scale", settings.scale_agents) as fleet:
        await bench.workload(fleet)
        flags = [*settings.flags("ours", concurrency), f"--ds-namespace={fleet.kured_namespace}"]
        async with many_agents(bench, fleet, flags) as pid:
            figures = await roll(bench, fleet, concurrency, "scale")
            size = procs.rss_bytes(pid) or 0
    return {
        "scale": figures
        | {
            "agents": settings.scale_agents,
            "agents_process_rss_mib": round(size / MIB, 1),
            "kured_args": flags,
        }
    }


RUNS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "idle": idle,
    "detect": detect,
    "makespan": makespan,
    "scale": scale,
}


# --- the command --------------------------------------------------------------------------------


def api_http(plane: ControlPlane) -> httpx2.AsyncClient:
    """An HTTP client to the API server as the admin, for what lightkube has no call for."""
    config = KubeConfig.from_file(plane.kubeconfig).get()
    assert config is not None
    return http_client(config, ConnectionParams(trust_env=False))


async def run(
    plane: ControlPlane, settings: Settings, out: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    async with plane.client() as client, api_http(plane) as http:
        version = await http.get("/version")
        version.raise_for_status()
        results: dict[str, Any] = {
            "generated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "kured": kured.__version__,
            "kubernetes": version.json()["gitVersion"],
            "machine": machine(),
            "parameters": asdict(settings),
        }
        bench = Bench(plane, client, http, settings, out, say)
        for scenario in settings.scenarios:
            results |= await RUNS[scenario](bench)
    return results


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog=PROG, description="kured's benchmarks on a local sandbox (bench/README.md)"
    )
    add = parser.add_argument
    add("--nodes", type=_positive, default=defaults.nodes, help="fleet size (default: 12)")
    add("--concurrency", type=_positive, nargs="+", default=list(defaults.concurrency))
    add("--reboot-seconds", type=float, default=defaults.reboot_seconds)
    add("--stop-seconds", type=float, default=defaults.stop_seconds)
    add("--poll-period", default=defaults.poll_period, help="polling mode's --period")
    add("--idle-seconds", type=float, default=defaults.idle_seconds)
    add("--settle-seconds", type=float, default=defaults.settle_seconds)
    add("--scale-agents", type=_positive, default=defaults.scale_agents)
    add("--scale-concurrency", type=_positive, default=defaults.scale_concurrency)
    add("--timeout", type=float, default=defaults.timeout, help="for any one wait (s)")
    add("--only", choices=SCENARIOS, action="append", help="run only these (repeatable)")
    add("--modes", choices=MODES, nargs="+", default=list(MODES), help="makespan rolls of these")
    add("--out", type=Path, default=RESULTS, help="where results go (default: bench/results)")
    add("--state-dir", type=Path, help="default: a new temporary directory")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        nodes=args.nodes,
        concurrency=tuple(args.concurrency),
        reboot_seconds=args.reboot_seconds,
        stop_seconds=args.stop_seconds,
        poll_period=args.poll_period,
        idle_seconds=args.idle_seconds,
        settle_seconds=args.settle_seconds,
        scale_agents=args.scale_agents,
        scale_concurrency=args.scale_concurrency,
        timeout=args.timeout,
        scenarios=tuple(s for s in SCENARIOS if s in (args.only or SCENARIOS)),
        modes=tuple(m for m in MODES if m in args.modes),
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM and SIGHUP stop the benchmark as Ctrl-C does, so it still tears down."""
    raise KeyboardInterrupt


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def _bench(state_dir: Path, settings: Settings, out: Path) -> dict[str, Any]:
    plane = ControlPlane.start(state_dir)
    try:
        _say(f"control plane {plane.version} at {plane.server} (state: {state_dir})")
        return asyncio.run(run(plane, settings, out, _say))
    finally:
        plane.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """0 once the figures are written; 1 with one line if a scenario failed (the state dir
    is kept, with every log); 130 when interrupted. Everything started is stopped."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except UsageError as error:
        parser.error(str(error))
    temporary = args.state_dir is None
    state_dir: Path = Path(tempfile.mkdtemp(prefix="kured-bench-")) if temporary else args.state_dir
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        results = _bench(state_dir, settings, args.out)
    except (SandboxError, TimeoutError, IncompleteRoll) as error:
        print(f"{PROG}: error: {error} (state and logs kept in {state_dir})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    for line in write(results, args.out):
        print(line)
    _say(f"results in {args.out}")
    if temporary:
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
