"""`make bench`: how fast kured rolls reboots through a sandbox fleet, how little it asks of the
API server when there is nothing to do, how much memory a daemon takes, and whether it holds
with up to 1000 agents. Measured from outside the daemons; written to bench/results (latest.json,
latest.md, one Gantt chart per roll). bench/README.md defines every figure.

    python -m kured_testbed.bench [--nodes 12] [--concurrency 1 3] [--idle-seconds 120] …

One control plane; each scenario on fleets of its own, stopped when it ends, in this order
(idle first: deleting the other scenarios' namespaces keeps the controllers busy for a while):

idle      kube-apiserver's requests with nothing to do: without daemons (the baseline), with
          ours, with polling; then the RSS of each of our daemons
detect    one node at a time, the lock free: sentinel created → node cordoned
makespan  every node triggered at once, for each c: ours (``--period=1h``: the lock watch
          hands over) and ours in Go kured's timing (``--poll-only --period=1m``)
scale     for each --scale-nodes, that many agents in one process
          (:mod:`kured_testbed.manyagents`), ours against polling on one fleet, the API
          server's own counters per lock hand-off (:mod:`kured_testbed.benchscale`)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx2
from lightkube.config.client_adapter import AsyncClient as http_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import KubeConfig

import kured
from kured.phases.wakeups import SENTINEL_POLL_SECONDS
from kured_testbed import procs
from kured_testbed.api import Fleet, audit_events
from kured_testbed.benchmath import IncompleteRoll, audit_requests, distribution, per_node_hour
from kured_testbed.benchreport import machine, write
from kured_testbed.benchrun import (
    MIB,
    MODES,
    SCENARIOS,
    Bench,
    BenchFailed,
    Settings,
    Watch,
    forget_status,
    install_kured,
    kured_user,
    quiet,
    roll,
)
from kured_testbed.benchscale import scale
from kured_testbed.controlplane import ControlPlane
from kured_testbed.state import SandboxError, UsageError

PROG = "kured-bench"
RESULTS = Path(kured.__file__).resolve().parents[2] / "bench" / "results"


# --- the scenarios ------------------------------------------------------------------------------


async def _makespan_roll(bench: Bench, mode: str, concurrency: int) -> dict[str, Any]:
    """One roll on a fresh fleet of its own."""
    settings = bench.settings
    name = f"{mode}-c{concurrency}"
    flags = settings.flags(mode, concurrency)
    async with bench.fleet(name, settings.nodes) as fleet:
        await bench.workload(fleet)
        await bench.run_kured(fleet, flags)
        figures = await roll(bench, fleet, concurrency, f"makespan-{name}")
    return figures | {"kured_args": flags}


async def makespan(bench: Bench) -> dict[str, Any]:
    """Ours and polling (or the --modes chosen) side by side, for each concurrency, each on a
    fresh fleet. Ours' rolls run one after another; polling's rolls, which wait on their
    period nearly all the time (a request per daemon per minute), run beside them and each
    other, unless --serial-rolls (then everything in turn, as bench-full does)."""
    settings = bench.settings

    async def in_turn(mode: str, concurrencies: Sequence[int]) -> dict[str, Any]:
        return {f"c={c}": await _makespan_roll(bench, mode, c) for c in concurrencies}

    if settings.serial_rolls:
        return {
            "makespan_ratio": {m: await in_turn(m, settings.concurrency) for m in settings.modes}
        }
    async with asyncio.TaskGroup() as group:
        ours = group.create_task(
            in_turn("ours", settings.concurrency if "ours" in settings.modes else ())
        )
        polling = [
            group.create_task(in_turn("polling", (c,)))
            for c in (settings.concurrency if "polling" in settings.modes else ())
        ]
    rolls = {
        "ours": ours.result(),
        "polling": {k: v for t in polling for k, v in t.result().items()},
    }
    return {"makespan_ratio": {mode: rolls[mode] for mode in settings.modes}}


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


async def _idle_window(bench: Bench, fleet: Fleet) -> tuple[float, dict[str, int]]:
    """kube-apiserver's request counter over one window, and kured's requests in it by the
    audit log (per "verb resource")."""
    await quiet(bench)
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
    add("--scale-nodes", type=_positive, nargs="+", default=list(defaults.scale_nodes))
    add("--scale-concurrency", type=_positive, default=defaults.scale_concurrency)
    add("--scale-idle-seconds", type=float, default=defaults.scale_idle_seconds)
    add("--scale-poll-seconds", type=float, default=defaults.scale_poll_seconds)
    add("--timeout", type=float, default=defaults.timeout, help="for any one wait (s)")
    add("--only", choices=SCENARIOS, action="append", help="run only these (repeatable)")
    add("--serial-rolls", action="store_true", help="polling's makespan rolls not beside ours")
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
        scale_nodes=tuple(sorted(set(args.scale_nodes))),
        scale_concurrency=args.scale_concurrency,
        scale_idle_seconds=args.scale_idle_seconds,
        scale_poll_seconds=args.scale_poll_seconds,
        timeout=args.timeout,
        scenarios=tuple(s for s in SCENARIOS if s in (args.only or SCENARIOS)),
        modes=tuple(m for m in MODES if m in args.modes),
        serial_rolls=args.serial_rolls,
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
    began = time.monotonic()
    try:
        results = _bench(state_dir, settings, args.out)
    except (SandboxError, TimeoutError, IncompleteRoll) as error:
        print(f"{PROG}: error: {error} (state and logs kept in {state_dir})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    results["wall_s"] = round(time.monotonic() - began, 1)
    for line in write(results, args.out):
        print(line)
    _say(f"results in {args.out}")
    if temporary:
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
