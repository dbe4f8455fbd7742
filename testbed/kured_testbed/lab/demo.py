"""`make lab`: `kured-lab up` of 3 guests, the sentinel created in each, the roll followed on
the API and printed as `make demo` prints it, with each guest's boot id before and after;
then everything is stopped (unless --keep).

    python -m kured_testbed.lab.demo [--nodes 3] [--state-dir DIR] [--reboot-method M] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from kured_testbed.controlplane import ControlPlane
from kured_testbed.demo import say
from kured_testbed.lab import roll, up
from kured_testbed.lab.cli import PROG, run_command
from kured_testbed.lab.guests import guest_dirs

ROLL_SECONDS = 3600.0


async def _roll(state_dir: Path) -> None:
    plane = ControlPlane.attach(state_dir)
    async with plane.client() as client:
        began = time.monotonic()
        result = await roll.roll(client, state_dir, sys.stdout, ROLL_SECONDS)
    for line in result.lines():
        say(sys.stdout, line)
    say(sys.stdout, f"lab roll: {time.monotonic() - began:.1f} s")


def _lab(args: argparse.Namespace) -> int:
    state_dir = (args.state_dir or Path(tempfile.mkdtemp(prefix="kured-lab-"))).resolve()
    settings = up.LabSettings(args.nodes, args.reboot_method)
    began = time.monotonic()
    say(sys.stdout, f"{PROG} up: {args.nodes} QEMU guests (state: {state_dir}) ...")
    kept = False
    try:
        phases = asyncio.run(up.up(state_dir, settings))
        say(sys.stdout, "up: " + ", ".join(f"{k} {v:g} s" for k, v in phases.seconds.items()))
        say(
            sys.stdout,
            f"up in {time.monotonic() - began:.1f} s; guests: {len(guest_dirs(state_dir))}",
        )
        asyncio.run(_roll(state_dir))
        kept = args.keep
    finally:
        if not kept:
            up.down(state_dir)
    if kept:
        say(sys.stdout, f"left running: {PROG} down --state-dir {state_dir}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="make lab", description=__doc__)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--reboot-method", choices=("command", "signal"), default="command")
    parser.add_argument("--keep", action="store_true")
    run_command(lambda: _lab(parser.parse_args()))


if __name__ == "__main__":
    main()
