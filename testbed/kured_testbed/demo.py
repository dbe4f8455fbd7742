"""`make demo`: kured rolling reboots through a sandbox fleet, watched live, timed from outside.

Starts a control plane (building its binaries once on a fresh machine), 5 simulated nodes over
3 zones with a workload guarded by PDBs, and kured on every node as the ServiceAccount of the
repo's own RBAC; then makes every node need a reboot and follows the roll in the cluster until
kured has let go of the last node. Ends with how long each node spent draining, rebooting and
getting back into service, and stops everything it started (also on Ctrl-C, SIGTERM, SIGHUP).

    python -m kured_testbed.demo [--nodes N] [--state-dir DIR] [--keep]

:func:`run_roll` takes a running control plane, so the e2e test runs the same roll against
the session's control plane; :func:`main` starts and stops one of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol, TextIO

from lightkube import AsyncClient

from kured_testbed.api import Fleet, FleetConfig, default_manifests
from kured_testbed.controlplane import ControlPlane, cached_binaries
from kured_testbed.manifests import SYSTEM_NAMESPACE
from kured_testbed.rollwatch import Roll, following
from kured_testbed.state import SandboxError, SandboxState, UsageError

PROG = "kured-demo"
CONCURRENCY = 1
TICK = 0.5  # seconds between redraws when nothing changes (the FOR column keeps counting)


@dataclass(frozen=True)
class DemoSettings:
    nodes: int = 5
    zones: int = 3
    fleet: str = "demo"
    kured_namespace: str = SYSTEM_NAMESPACE  # where kuredctl looks by default
    period: str = "5s"
    reboot_seconds: float = 5.0
    within: float = 300.0  # seconds the roll may take before the demo gives up

    def fleet_config(self) -> FleetConfig:
        return FleetConfig(self.fleet, self.nodes, self.zones, self.reboot_seconds)

    def kured_args(self) -> list[str]:
        return [f"--period={self.period}", f"--concurrency={CONCURRENCY}"]


class RollFailed(SandboxError):
    """The roll did not finish in time, or took down more nodes than the concurrency."""


def say(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)


def _table(rows: Sequence[Sequence[str]], right: int) -> list[str]:
    """Aligned columns; those from index `right` on (numbers) aligned right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(width) if i >= right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# --- the live view -------------------------------------------------------------------------


class View(Protocol):
    def show(self, roll: Roll, now: float) -> None: ...


def live_table(roll: Roll, now: float) -> list[str]:
    """The roll right now: one header line, then one row per node."""
    done = sum(roll.done(name) for name in roll.nodes)
    head = (
        f"rolling {now - (roll.began or now):5.1f} s · lock: {', '.join(roll.holders) or 'free'}"
        f" · most cordoned at once: {roll.most_cordoned} · done {done}/{len(roll.nodes)}"
    )
    rows = [("NODE", "ZONE", "STATE", "CORDONED", "READY", "LOCK", "FOR (s)")]
    for name in roll.nodes:
        view = roll.views[name]
        label, since = roll.labels[name]
        lock = "held" if name in roll.holders else ""
        cordoned, ready = _yes(view.unschedulable), _yes(view.ready)
        zone = roll.config.zone(name)
        rows.append((name, zone, label, cordoned, ready, lock, _seconds(now - since)))
    return [head, *_table(rows, right=6)]


class ScreenView:
    """On a terminal: the live table, redrawn in place (ANSI cursor up, clear below)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.drawn = 0

    def show(self, roll: Roll, now: float) -> None:
        if roll.began is None:
            return
        width = shutil.get_terminal_size().columns
        lines = [line[:width] for line in live_table(roll, now)]
        erase = f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""
        self.out.write(erase + "\n".join(lines) + "\n")
        self.out.flush()
        self.drawn = len(lines)


class LineView:
    """Anywhere else (a pipe, a log): one line per change of a node's state or the lock."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown: dict[str, str] = {}
        self.holders: tuple[str, ...] | None = None

    def show(self, roll: Roll, now: float) -> None:
        if roll.began is None:
            return
        for name in roll.nodes:
            label, since = roll.labels[name]
            if self.shown.get(name) != label:
                self.shown[name] = label
                say(self.out, f"{since - roll.began:6.1f} s  {name}  {label}")
        if roll.holders != self.holders:
            self.holders = roll.holders
            say(self.out, f"{now - roll.began:6.1f} s  lock: {', '.join(roll.holders) or 'free'}")


def live_view(out: TextIO) -> View:
    return ScreenView(out) if out.isatty() else LineView(out)


# --- the roll ------------------------------------------------------------------------------


def summary(roll: Roll) -> list[str]:
    """The per-node table and the roll's totals."""
    rows: list[tuple[str, ...]] = [
        ("NODE", "ZONE", "DRAIN (s)", "REBOOT (s)", "BACK-READY (s)", "TOTAL (s)")
    ]
    for name, line in roll.timelines.items():
        times = (line.drain, line.reboot, line.back_ready, line.total)
        rows.append((name, roll.config.zone(name), *(_seconds(t) for t in times)))
    return [
        *_table(rows, right=2),
        "DRAIN: cordoned → NotReady; REBOOT: → Ready with a new boot id; BACK-READY: → uncordoned",
        f"roll: {_seconds(roll.wall_time)} s wall time · most nodes cordoned at once: "
        f"{roll.most_cordoned} (concurrency {CONCURRENCY}) · reboots: {roll.reboots}",
    ]


@dataclass
class Following:
    """The roll, fed by watches: waits for a condition, redrawing the view as things change."""

    roll: Roll
    view: View
    changed: asyncio.Event
    check: Callable[[], None]  # raises if a watch failed
    within: float  # seconds, from now, for everything this waits for
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.within

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self.view.show(self.roll, time.monotonic())
            if time.monotonic() > self.deadline:
                raise RollFailed(
                    f"the roll did not finish within {self.within:g} s: {self.roll.describe()}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), TICK)
            self.changed.clear()
            self.check()
        self.view.show(self.roll, time.monotonic())


async def _follow_roll(
    client: AsyncClient, fleet: Fleet, settings: DemoSettings, out: TextIO
) -> Roll:
    """Trigger every node once the watches know the boot ids, then follow to the end."""
    roll = Roll(fleet.config)
    changed = asyncio.Event()
    async with following(client, roll, fleet.kured_namespace, changed) as check:
        watch = Following(roll, live_view(out), changed, check, settings.within)
        await watch.until(lambda: roll.synced)
        say(out, f"every node needs a reboot now; kured rolls them {CONCURRENCY} at a time")
        fleet.trigger()
        roll.begin(time.monotonic())
        await watch.until(lambda: roll.finished)
    return roll


async def _prepare(fleet: Fleet, settings: DemoSettings, out: TextIO) -> None:
    namespace = await fleet.workload()
    say(
        out,
        f"workload in {namespace}: web (PDB maxUnavailable 1), db (PDB minAvailable 1), "
        "cache (emptyDir), pod standalone",
    )
    args = settings.kured_args()
    await fleet.run_kured(args, manifests=default_manifests(), as_serviceaccount=True)
    say(
        out,
        f"kured on every node as {fleet.kured_namespace}/kured (deploy/rbac.yaml): "
        f"{' '.join(args)}",
    )


async def run_roll(
    plane: ControlPlane, settings: DemoSettings, out: TextIO, *, keep: bool = False
) -> Roll:
    """Start the fleet on plane, roll it, print the table; stops the fleet unless keep and
    the roll succeeded. RollFailed if it did not finish in time or broke the concurrency."""
    config = settings.fleet_config()
    async with plane.client() as client:
        say(out, f"starting {config.nodes} nodes over {config.zones} zones …")
        fleet = await Fleet.start(plane, client, config, kured_namespace=settings.kured_namespace)
        kept = False
        try:
            await _prepare(fleet, settings, out)
            roll = await _follow_roll(client, fleet, settings, out)
            for line in summary(roll):
                say(out, line)
            if roll.most_cordoned > CONCURRENCY:
                raise RollFailed(f"{roll.most_cordoned} nodes were cordoned at once")
            kept = keep
        finally:
            if not kept:
                await fleet.stop()
    return roll


# --- the command ---------------------------------------------------------------------------


def _start_plane(state_dir: Path, out: TextIO) -> ControlPlane:
    if cached_binaries() is None:
        build_log = SandboxState(state_dir.resolve()).log_file("build")
        say(
            out,
            "control plane binaries not cached: building them once from Debian's "
            f"kubernetes source (about 5 minutes; log: {build_log})",
        )
    began = time.monotonic()
    plane = ControlPlane.start(state_dir)
    say(
        out,
        f"control plane {plane.version} at {plane.server}, up in "
        f"{time.monotonic() - began:.1f} s (state: {state_dir})",
    )
    return plane


def _how_to_use(state_dir: Path, out: TextIO) -> None:
    tools = Path(sys.executable).parent
    kubeconfig = state_dir / "kubeconfig"
    say(
        out,
        f"left running; try:\n"
        f"  kubectl --kubeconfig {kubeconfig} get nodes\n"
        f"  {tools / 'kuredctl'} --kubeconfig {kubeconfig} status\n"
        f"  {tools / 'kured-sandbox'} trigger --state-dir {state_dir}   # roll again\n"
        f"  {tools / 'kured-sandbox'} down --state-dir {state_dir}      # stop everything",
    )


def _demo(state_dir: Path, settings: DemoSettings, *, keep: bool, out: TextIO) -> None:
    began = time.monotonic()
    plane = _start_plane(state_dir, out)
    kept = False
    try:
        asyncio.run(run_roll(plane, settings, out, keep=keep))
        kept = keep
    finally:
        if not kept:
            plane.stop()
    say(out, f"demo: {time.monotonic() - began:.1f} s in all")
    if kept:
        _how_to_use(state_dir, out)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM and SIGHUP stop the demo as Ctrl-C does, so it still tears down."""
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="kured rolling reboots through a local sandbox, watched live"
    )
    parser.add_argument("--nodes", type=int, default=DemoSettings.nodes, help="default: 5")
    parser.add_argument("--state-dir", type=Path, help="default: a new temporary directory")
    parser.add_argument(
        "--keep", action="store_true", help="leave the sandbox running after a successful roll"
    )
    return parser


def _failed(message: str, state_dir: Path) -> int:
    print(f"{PROG}: error: {message} (state and logs kept in {state_dir})", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """0 after a good roll; 1 with one line on failure (the state dir, with every log, is
    kept); 130 when interrupted."""
    parser = _parser()
    args = parser.parse_args(argv)
    settings = DemoSettings(nodes=args.nodes)
    try:
        settings.fleet_config()
    except UsageError as error:
        parser.error(str(error))
    temporary = args.state_dir is None
    state_dir: Path = Path(tempfile.mkdtemp(prefix="kured-demo-")) if temporary else args.state_dir
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        _demo(state_dir, settings, keep=args.keep, out=out)
    except SandboxError as error:
        return _failed(f"{error}", state_dir)
    except Exception as error:  # a bug: still one line, and the logs to look into it
        return _failed(f"unexpected {type(error).__name__}: {error}", state_dir)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; everything it started is stopped", file=sys.stderr)
        code = 130
    else:
        code = 0
    if temporary and not (args.keep and code == 0):
        shutil.rmtree(state_dir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
