"""`make chaos`: kured rolling through small sandbox fleets while faults rain on it, each
roll judged by an independent checker (:mod:`kured_testbed.audit_check`).

    python -m kured_testbed.chaos [--faults 200] [--backend both] [--nodes 5] [--seed S]

Starts its own control plane in a temporary directory and, for each lock backend, runs
rolls until at least ``--faults`` faults were injected: a fresh fleet with a workload and
one node cordoned beforehand, kured as its ServiceAccount, every node given a reboot
sentinel, the faults of :mod:`kured_testbed.faults` injected until every node rebooted,
then the roll is left to finish and checked. Prints each roll and the totals (faults by
kind, violations, stuck nodes); exits 1 on any violation or stuck node. Every process it
started is stopped, whatever happens. docs/chaos.md says what is and is not simulated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Node

from kured_testbed import clockskew
from kured_testbed.api import Fleet, FleetConfig, default_manifests
from kured_testbed.audit_check import (
    FinalNode,
    Reboot,
    Roll,
    Verdict,
    check,
    deletions,
    node_writes,
)
from kured_testbed.controlplane import ControlPlane
from kured_testbed.faults import (
    ANNOTATION_BACKEND,
    API_ERRORS,
    LEASE_BACKEND,
    PROGRESS_ANNOTATION,
    Chaos,
    NodeWatch,
    Plan,
    lock_holders,
)
from kured_testbed.state import SandboxError

BACKENDS = (ANNOTATION_BACKEND, LEASE_BACKEND)
SETTLE_SECONDS = 3.0  # after a roll looks finished: long enough to see a second reboot
FINISH_SECONDS = 120.0  # after the faults stop, for the roll to finish
CHECK_SECONDS = 0.5


@dataclass(frozen=True)
class Settings:
    """The shape of every roll."""

    # Room for the faults: one node cordoned before, one deleted, `concurrency` draining, and
    # one left for the evicted pods (or the PodDisruptionBudgets block every drain).
    nodes: int = 5
    concurrency: int = 2
    reboot_seconds: float = 1.0
    kill_chance: float = 0.4  # per node and phase boundary
    restarts: tuple[str, ...] = ("etcd", "kube-apiserver")  # one per roll, in turn
    heavy: bool = True  # node deletion, garbage in the lock, clock jumps
    roll_timeout: float = 300.0  # for every node to reboot, faults included

    def kured_flags(self, backend: str) -> list[str]:
        """Short periods; a lock TTL and stale-lock timeout short enough that a wrong clock
        matters; a reboot delay, so that "after the drain" is a moment one can hit."""
        return [
            "--period=2s",
            f"--concurrency={self.concurrency}",
            f"--lock-backend={backend}",
            "--lock-ttl=30s",
            "--stale-lock-timeout=2m",
            "--reboot-delay=1s",
        ]


@dataclass
class RollResult:
    name: str
    backend: str
    injected: Counter[str]
    verdict: Verdict
    seconds: float

    def line(self) -> str:
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(self.injected.items()))
        verdict = self.verdict
        text = (
            f"{self.name} [{self.backend}] {self.seconds:.0f} s: "
            f"{sum(self.injected.values())} faults ({faults or 'none'}); "
            f"{len(verdict.violations)} violations, {len(verdict.stuck)} stuck, "
            f"most unavailable at once {verdict.most_unavailable}"
        )
        details = [f"\n    violation: {v}" for v in verdict.violations]
        details += [f"\n    stuck: {node}" for node in verdict.stuck]
        return text + "".join(details)


@dataclass
class Totals:
    backend: str
    rolls: list[RollResult] = field(default_factory=list)

    @property
    def injected(self) -> Counter[str]:
        return sum((r.injected for r in self.rolls), Counter())

    @property
    def violations(self) -> int:
        return sum(len(r.verdict.violations) for r in self.rolls)

    @property
    def stuck(self) -> int:
        return sum(len(r.verdict.stuck) for r in self.rolls)

    def summary(self) -> str:
        injected = self.injected
        most = max((r.verdict.most_unavailable for r in self.rolls), default=0)
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(injected.items()))
        return (
            f"{self.backend}: {len(self.rolls)} rolls, {sum(injected.values())} faults injected, "
            f"{self.violations} violations, {self.stuck} nodes stuck, "
            f"most unavailable at once {most}\n  faults: {kinds}"
        )


@dataclass(frozen=True)
class Run:
    """What every roll of one run shares."""

    plane: ControlPlane
    client: AsyncClient
    settings: Settings
    seed: int
    clock_library: Path | None  # the LD_PRELOAD clock shim (None: no C compiler)
    workdir: Path  # each roll's facts are saved in workdir/rolls/<fleet>.json
    prefix: str = "chaos"


async def run_backend(
    run: Run, backend: str, faults: int, report: Callable[[str], None] = print
) -> Totals:
    """Rolls on one backend until at least `faults` faults were injected."""
    totals = Totals(backend)
    short = "a" if backend == ANNOTATION_BACKEND else "l"
    while sum(totals.injected.values()) < faults and len(totals.rolls) < max(3, faults):
        number = len(totals.rolls) + 1
        result = await run_roll(run, backend, f"{run.prefix}-{short}{number}", number)
        report(result.line())
        totals.rolls.append(result)
    return totals


async def run_roll(run: Run, backend: str, name: str, number: int) -> RollResult:
    """One roll on a fresh fleet, stopped and deleted afterwards (the roll's number picks
    the control plane component it restarts, in turn)."""
    started = time.monotonic()
    settings = run.settings
    config = FleetConfig(
        name, settings.nodes, reboot_seconds=settings.reboot_seconds, pod_start_seconds=0.2
    )
    fleet = await Fleet.start(run.plane, run.client, config, kured_namespace=f"{name}-kured")
    try:
        rng = random.Random(f"{run.seed}-{name}")
        injected, verdict = await _roll(run, fleet, backend, rng, number)
    finally:
        await fleet.stop()
    return RollResult(name, backend, injected, verdict, time.monotonic() - started)


async def _roll(
    run: Run, fleet: Fleet, backend: str, rng: random.Random, number: int
) -> tuple[Counter[str], Verdict]:
    settings = run.settings
    await fleet.workload(stop_seconds=0.5)
    pre_cordoned = rng.choice(fleet.nodes)
    await run.client.patch(Node, pre_cordoned, {"spec": {"unschedulable": True}})
    env = {"LD_PRELOAD": str(run.clock_library)} if run.clock_library else {}
    await fleet.run_kured(
        settings.kured_flags(backend),
        manifests=default_manifests(),
        as_serviceaccount=True,
        env=env,
    )
    turn = number + BACKENDS.index(backend)  # so that one roll per backend restarts both
    restart = settings.restarts[turn % len(settings.restarts)] if settings.restarts else ""
    plan = Plan.draw(
        rng,
        fleet.nodes,
        kill_chance=settings.kill_chance,
        restart=restart,
        heavy=settings.heavy,
        clock=run.clock_library is not None,
    )
    audit_from = AuditMark.of(run.plane.state.audit_log)
    triggered = time.time()
    fleet.trigger()
    watch = NodeWatch(run.client, fleet.name)
    chaos = Chaos(plane=run.plane, fleet=fleet, backend=backend, plan=plan, rng=rng, watch=watch)
    await _with_faults(chaos, watch, triggered, pre_cordoned, settings.roll_timeout)
    await fleet.stop_kured()
    roll = await _facts(run, fleet, audit_from, triggered, pre_cordoned)
    _save(run.workdir / "rolls" / f"{fleet.name}.json", roll)
    return chaos.injected, check(roll)


async def _with_faults(
    chaos: Chaos, watch: NodeWatch, triggered: float, pre_cordoned: str, within: float
) -> None:
    """Inject faults until every node rebooted (or `within` s), then let the roll finish."""
    fleet = chaos.fleet
    watching = asyncio.create_task(watch.run())
    injecting = asyncio.create_task(chaos.run())
    deadline = time.monotonic() + within

    async def rebooted() -> bool:
        return all(_rebooted(fleet, n, triggered) for n in fleet.nodes if n not in chaos.deleted)

    async def finished() -> bool:
        nodes = [n for n in fleet.nodes if n not in chaos.deleted]
        if not all(_rebooted(fleet, n, triggered) for n in nodes):
            return False
        if not all(_done(watch.nodes.get(n), n == pre_cordoned) for n in nodes):
            return False
        return not await lock_holders(fleet.client, fleet.kured_namespace)

    try:
        await _until(rebooted, deadline)
        chaos.stop()
        await injecting
        if await _until(finished, time.monotonic() + FINISH_SECONDS):
            await asyncio.sleep(SETTLE_SECONDS)
    finally:
        chaos.stop()
        await injecting
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching


def _rebooted(fleet: Fleet, node: str, since: float) -> bool:
    return any(r["down"] >= since for r in fleet.reboots(node))


def _done(node: Node | None, cordoned_before: bool) -> bool:
    if node is None or node.metadata is None:
        return False
    unschedulable = bool(node.spec and node.spec.unschedulable)
    return PROGRESS_ANNOTATION not in (node.metadata.annotations or {}) and (
        unschedulable == cordoned_before
    )


async def _until(check: Callable[[], Awaitable[bool]], deadline: float) -> bool:
    """Poll check until true (True) or the deadline (False); API errors count as not yet."""
    while time.monotonic() < deadline:
        with contextlib.suppress(*API_ERRORS):
            if await check():
                return True
        await asyncio.sleep(CHECK_SECONDS)
    return False


async def _facts(
    run: Run, fleet: Fleet, audit_from: AuditMark, triggered: float, pre_cordoned: str
) -> Roll:
    """What the checker gets: the audit log since the roll began, the hosts' reboot
    histories and the cluster's end state."""
    events = list(audit_from.events_since(run.plane.state.audit_log))
    final = {}
    for name in fleet.nodes:
        with contextlib.suppress(ApiError):
            node = await run.client.get(Node, name)
            annotations = (node.metadata.annotations if node.metadata else None) or {}
            final[name] = FinalNode(
                unschedulable=bool(node.spec and node.spec.unschedulable),
                progress=PROGRESS_ANNOTATION in annotations,
            )
    return Roll(
        nodes=tuple(fleet.nodes),
        kured_user=f"system:serviceaccount:{fleet.kured_namespace}:kured",
        concurrency=run.settings.concurrency,
        triggered=dict.fromkeys(fleet.nodes, triggered),
        pre_cordoned=frozenset({pre_cordoned}),
        reboots={n: [Reboot(r["down"], r["time"]) for r in fleet.reboots(n)] for n in fleet.nodes},
        writes=node_writes(events, fleet.nodes),
        deleted=deletions(events, fleet.nodes),
        final=final,
        lock_holders=tuple(await lock_holders(run.client, fleet.kured_namespace)),
        end=time.time(),
    )


def _save(path: Path, roll: Roll) -> None:
    """What the checker was given, for a look at a roll that failed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(roll), default=sorted, indent=1))


@dataclass(frozen=True)
class AuditMark:
    """Where the audit log ended when a roll began. The API server rotates it (at
    --audit-log-maxsize, renaming it to audit-<time>.log), so the file is told by inode."""

    inode: int
    offset: int

    @classmethod
    def of(cls, path: Path) -> AuditMark:
        status = path.stat()
        return cls(status.st_ino, status.st_size)

    def events_since(self, path: Path) -> Iterator[dict[str, Any]]:
        """Every event written since: the rest of the marked file, then every newer one (a
        half-written last line is skipped)."""
        chain = [*sorted(path.parent.glob(f"{path.stem}-*{path.suffix}")), path]  # oldest first
        start = next((i for i, f in enumerate(chain) if f.stat().st_ino == self.inode), None)
        if start is None:
            raise SandboxError(f"the audit log a roll began in is gone from {path.parent}")
        for number, file in enumerate(chain[start:]):
            with file.open("rb") as log:
                log.seek(self.offset if number == 0 else 0)
                for line in log:
                    with contextlib.suppress(ValueError):
                        yield json.loads(line)


async def chaos(
    plane: ControlPlane,
    settings: Settings,
    *,
    backends: tuple[str, ...],
    faults: int,
    seed: int,
    workdir: Path,
    prefix: str = "chaos",
    report: Callable[[str], None] = print,
) -> list[Totals]:
    """Every backend's rolls on a running control plane (the CLI's and the e2e test's)."""
    library = clockskew.build(workdir / "clockskew")
    if library is None:
        report("no C compiler for the clock shim: no clock jumps")
    async with plane.client() as client:
        run = Run(plane, client, settings, seed, library, workdir, prefix)
        return [await run_backend(run, backend, faults, report) for backend in backends]


def summary(totals: list[Totals]) -> str:
    faults = sum(sum(t.injected.values()) for t in totals)
    violations, stuck = sum(t.violations for t in totals), sum(t.stuck for t in totals)
    lines = [t.summary() for t in totals]
    lines.append(f"total: {faults} faults injected, {violations} violations, {stuck} nodes stuck")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kured_testbed.chaos", description=__doc__)
    parser.add_argument("--faults", type=int, default=200, help="at least this many per backend")
    parser.add_argument("--backend", choices=("both", *BACKENDS), default="both")
    parser.add_argument("--nodes", type=int, default=Settings.nodes)
    parser.add_argument("--concurrency", type=int, default=Settings.concurrency)
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir (sandbox state, rolls' facts)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.nodes < args.concurrency + 3:
        parser.error("--nodes must be at least --concurrency + 3 (see Settings.nodes)")
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    settings = Settings(nodes=args.nodes, concurrency=args.concurrency)
    command = " ".join(["python -m kured_testbed.chaos", *(argv or sys.argv[1:])])
    print(f"{command}  (seed {seed}, {settings.nodes} nodes, concurrency {settings.concurrency})")
    workdir = Path(tempfile.mkdtemp(prefix="kured-chaos-"))
    try:
        plane = ControlPlane.start(workdir / "sandbox")
        try:
            totals = asyncio.run(
                chaos(
                    plane,
                    settings,
                    backends=backends,
                    faults=args.faults,
                    seed=seed,
                    workdir=workdir,
                    report=lambda line: print(line, flush=True),
                )
            )
        finally:
            plane.stop()
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(summary(totals))
    return 1 if any(t.violations or t.stuck for t in totals) else 0


if __name__ == "__main__":
    sys.exit(main())
