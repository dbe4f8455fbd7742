"""The scale scenario: kured's cost to the API server as the fleet grows, against Go kured's
model (polling every --period) on the same fleet, measured from kube-apiserver's own /metrics.

For each fleet size N (``--scale-nodes``), one fleet of N simulated nodes over three zones,
no workload (every drain is the cordon alone, every reboot the same length), and every
node's agent in one process of its own (:mod:`kured_testbed.manyagents`), concurrency
``--scale-concurrency`` per zone (``--lock-group-label``). In this order on that fleet:

1. baseline: the counters over ``--scale-idle-seconds`` with no agent running (what the
   controllers, the scheduler and the simulated kubelets ask; the counters cannot tell
   users apart, so every later window has this rate taken off);
2. ours (``--period=1h``): an idle window, then a whole roll (every sentinel at once),
   checked by the audit checker;
3. polling (``--poll-only --period=<--poll-period>``): an idle window, then every sentinel
   at once and the counters over ``--scale-poll-seconds`` of that roll (a whole one takes
   ceil(N/slots) periods or more).

A hand-off is a node giving its lock slot back after its reboot (its uncordon, as the
benchmark's Node watch sees it); per hand-off is a window's counters above the baseline
over the hand-offs in it. bench/README.md defines the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kured_testbed import procs
from kured_testbed.api import Fleet, audit_events
from kured_testbed.benchmath import (
    HOUR,
    ApiCounters,
    Window,
    api_counters,
    audit_requests,
    growth,
)
from kured_testbed.benchrun import (
    MIB,
    Bench,
    forget_status,
    install_kured,
    kured_user,
    quiet,
    roll,
)
from kured_testbed.timeline import draw_per_handoff

T = TypeVar("T")
ZONE_LABEL = "topology.kubernetes.io/zone"  # the simulated kubelets' zone label


async def counters(bench: Bench) -> ApiCounters:
    response = await bench.http.get("/metrics")
    response.raise_for_status()
    return api_counters(response.text)


@dataclass
class Metered:
    """One measured window: the counters' movement and when (Unix time) it ran."""

    window: Window
    start: float
    end: float


@contextlib.asynccontextmanager
async def metering(bench: Bench) -> AsyncIterator[list[Metered]]:
    """Read the counters around the block; the list holds its window once the block ends."""
    found: list[Metered] = []
    before, start, began = await counters(bench), time.time(), time.monotonic()
    yield found
    after, seconds = await counters(bench), time.monotonic() - began
    found.append(Metered(Window(after - before, seconds), start, time.time()))


async def idle_window(bench: Bench) -> Metered:
    async with metering(bench) as found:
        await asyncio.sleep(bench.settings.scale_idle_seconds)
    return found[0]


@contextlib.asynccontextmanager
async def many_agents(
    bench: Bench, fleet: Fleet, kubeconfig: Path, flags: list[str]
) -> AsyncIterator[int]:
    """An agent for every node of fleet, all in one process of their own
    (:mod:`kured_testbed.manyagents`), as kured's ServiceAccount; yields its PID and stops it
    by that PID at the end. The roll fails at once if the process exits."""
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


@dataclass
class ModeRun:
    """What one mode did on the fleet: its idle window and its roll's window."""

    idle: Metered
    rolled: Metered
    handoffs: int
    extra: dict[str, Any]


class Sized:
    """One fleet size: the fleet, its baseline, and the figures of each mode on it."""

    def __init__(self, bench: Bench, fleet: Fleet, kubeconfig: Path) -> None:
        self.bench = bench
        self.fleet = fleet
        self.kubeconfig = kubeconfig
        self.user = kured_user(fleet.kured_namespace)
        settings = bench.settings
        self.zones = fleet.config.zones
        self.common = [
            f"--concurrency={settings.scale_concurrency}",
            f"--lock-group-label={ZONE_LABEL}",
            f"--ds-namespace={fleet.kured_namespace}",
        ]

    async def _reported(
        self, flags: list[str], then: Callable[[], Awaitable[T]]
    ) -> tuple[Metered, T, float]:
        """The agents with flags: their first report, an idle window, then `then`; returns
        the window, what `then` returned and the agents' process RSS (MiB) at its end."""
        bench = self.bench
        async with many_agents(bench, self.fleet, self.kubeconfig, flags) as pid:
            async with bench.watching(self.fleet) as watch:
                await watch.until(watch.reported, "every agent's first report")
            await quiet(bench)
            idle = await idle_window(bench)
            result = await then()
            size = procs.rss_bytes(pid) or 0
        return idle, result, round(size / MIB, 1)

    async def ours(self) -> ModeRun:
        """An idle window, then a whole roll (figures, chart, audit verdict)."""
        settings = self.bench.settings
        slots = settings.scale_concurrency * self.zones
        nodes = len(self.fleet.nodes)
        groups = {node: self.fleet.config.zone(node) for node in self.fleet.nodes}

        async def whole_roll() -> tuple[dict[str, Any], Metered]:
            async with metering(self.bench) as found:
                figures = await roll(
                    self.bench,
                    self.fleet,
                    slots,
                    f"scale-{nodes}",
                    lock_groups=(settings.scale_concurrency, groups),
                )
            return figures, found[0]

        flags = ["--period=1h", *self.common]
        idle, (figures, rolled), rss = await self._reported(flags, whole_roll)
        await forget_status(self.bench.client, self.fleet)  # for the next agents' first report
        extra = figures | {"kured_args": flags, "agents_process_rss_mib": rss}
        return ModeRun(idle, rolled, nodes, extra)

    async def polling(self) -> ModeRun:
        """An idle window, then the first --scale-poll-seconds of a roll."""
        bench = self.bench
        flags = ["--poll-only", f"--period={bench.settings.poll_period}", *self.common]

        async def partial_roll() -> tuple[Metered, int]:
            async with bench.watching(self.fleet) as watch:
                await watch.until(watch.reported, "every agent's first report")
                watch.roll.begin(time.monotonic())
                async with metering(bench) as found:
                    self.fleet.trigger()
                    await asyncio.sleep(bench.settings.scale_poll_seconds)
                done = sum(line.done for line in watch.roll.timelines.values())
            return found[0], done

        idle, (rolled, done), rss = await self._reported(flags, partial_roll)
        return ModeRun(idle, rolled, done, {"kured_args": flags, "agents_process_rss_mib": rss})


def mode_json(
    run: ModeRun, baseline: Metered, nodes: int, events: list[dict[str, Any]], user: str
) -> dict[str, Any]:
    """A mode's figures on one fleet: per hand-off and idle per node-hour, above baseline,
    and kured's own requests in the same windows from the audit log (exact)."""
    window = baseline.window
    idle_above, roll_above = run.idle.window.above(window), run.rolled.window.above(window)
    idle_audit = audit_requests(events, user, run.idle.start, run.idle.end)
    roll_audit = audit_requests(events, user, run.rolled.start, run.rolled.end)
    hours = run.idle.window.seconds / HOUR
    per_handoff = roll_above.per(run.handoffs) if run.handoffs else None
    return run.extra | {
        "handoffs": run.handoffs,
        "roll_seconds": round(run.rolled.window.seconds, 1),
        "per_handoff": per_handoff,
        "kured_requests_per_handoff_audit": (
            round(sum(roll_audit.values()) / run.handoffs, 2) if run.handoffs else None
        ),
        # What they were ("verb resource": count over the roll), to see where a cost goes.
        "kured_roll_requests_audit": dict(roll_audit.most_common()),
        "cpu_seconds_per_reboot": per_handoff["cpu_seconds"] if per_handoff else None,
        "idle_requests_per_node_hour": round(idle_above.requests / nodes / hours, 2),
        "idle_requests_per_node_hour_audit": round(sum(idle_audit.values()) / nodes / hours, 2),
        "idle_seconds": round(run.idle.window.seconds, 1),
    }


async def scale_at(bench: Bench, nodes: int) -> dict[str, Any]:
    """Baseline, ours and polling on one fleet of `nodes` (the module's docstring)."""
    async with bench.fleet(f"scale{nodes}", nodes) as fleet:
        kubeconfig = await install_kured(fleet)
        sized = Sized(bench, fleet, kubeconfig)
        await quiet(bench)
        bench.say(f"scale {nodes}: baseline, {bench.settings.scale_idle_seconds:g} s")
        baseline = await idle_window(bench)
        bench.say(f"scale {nodes}: ours")
        ours = await sized.ours()
        bench.say(f"scale {nodes}: polling")
        polling = await sized.polling()
        events = list(audit_events(fleet.state))
    seconds = baseline.window.seconds
    return {
        "nodes": nodes,
        "baseline_per_second": baseline.window.moved.scaled(1 / seconds).per(1),
        "ours": mode_json(ours, baseline, nodes, events, sized.user),
        "polling": mode_json(polling, baseline, nodes, events, sized.user),
    }


def _by_nodes(runs: dict[int, dict[str, Any]], mode: str, key: str) -> dict[int, float]:
    return {
        nodes: run[mode]["per_handoff"][key]
        for nodes, run in runs.items()
        if run[mode]["per_handoff"] is not None
    }


def summary(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The issue's keys: per hand-off by fleet size, and the largest fleet's roll."""
    largest = runs[max(runs)]["ours"]
    ours = _by_nodes(runs, "ours", "requests")
    return {
        "nodes": sorted(runs),
        "requests_per_handoff": {str(n): v for n, v in ours.items()},
        "polling_requests_per_handoff": {
            str(n): v for n, v in _by_nodes(runs, "polling", "requests").items()
        },
        "watch_events_per_handoff": {
            str(n): v for n, v in _by_nodes(runs, "ours", "watch_events").items()
        },
        "requests_per_handoff_growth": growth(ours),
        "makespan_ratio": largest["ratio"],
        "violations": len(largest["invariant"]["violations"]),
        "held": all(run["ours"]["invariant"]["held"] for run in runs.values()),
        "runs": {str(n): run for n, run in runs.items()},
    }


async def scale(bench: Bench) -> dict[str, Any]:
    """Every --scale-nodes size in turn (smallest first), then the issue's summary and its
    plot (<out>/scale-requests.png)."""
    runs: dict[int, dict[str, Any]] = {}
    for nodes in bench.settings.scale_nodes:
        runs[nodes] = await scale_at(bench, nodes)
        # each size as it is done: a later, larger one may not finish
        text = json.dumps(runs[nodes], indent=2, ensure_ascii=False)
        (bench.out / f"scale-{nodes}.json").write_text(text + "\n")
    found = summary(runs)
    series = {
        "ours (lock watch)": _by_nodes(runs, "ours", "requests"),
        f"polling (--period={bench.settings.poll_period})": _by_nodes(runs, "polling", "requests"),
    }
    title = (
        f"kube-apiserver requests per hand-off, c={bench.settings.scale_concurrency} per zone "
        f"(above the no-kured baseline)"
    )
    draw_per_handoff(bench.out / "scale-requests.png", title, series)
    return {"scale": found}
