"""Steady-state RSS of kured daemons from two source trees, side by side on one sandbox.

``python -m kured_testbed.rss --baseline SRC [--daemons 3] [--settle 75]`` starts a control
plane with two fleets, one running the daemons of the ``kured`` package under ``SRC`` (for
example ``git worktree add /tmp/main main`` and ``/tmp/main/src``) and one running this
checkout's, all with this venv's packages, as the image runs them (``PYTHONOPTIMIZE=2``,
bytecode compiled beforehand). Once every daemon has reported (``kured.dev/status`` on
its Node) and ``--settle`` seconds more have passed, it prints VmRSS of each daemon and the
median per tree as JSON, then stops everything it started. bench/README.md, ``rss_mib``.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import functools
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node

import kured
from kured.policy import STATUS_ANNOTATION
from kured_testbed import procs
from kured_testbed.api import Fleet, FleetConfig, wait_until
from kured_testbed.benchrun import install_kured
from kured_testbed.controlplane import ControlPlane
from kured_testbed.daemons import compile_bytecode, kured_command

MIB = 1024 * 1024
MAIN = "from kured.cli import main; main()"


async def run_tree(client: AsyncClient, fleet: Fleet, source: Path | None) -> None:
    """The fleet's daemons, from ``source`` (None: this checkout), as the admin."""
    kubeconfig = await install_kured(fleet)
    flags = kured_command(kubeconfig, fleet.kured_namespace, ["--period=1h"])[2:]
    path = [f"PYTHONPATH={source}"] if source else []
    await fleet.run_kured(["env", *path, sys.executable, "-c", MAIN, *flags], raw=True)


async def reported(client: AsyncClient, fleet: Fleet) -> bool:
    nodes = [await client.get(Node, name) for name in fleet.nodes]
    return all(
        STATUS_ANNOTATION in ((node.metadata.annotations or {}) if node.metadata else {})
        for node in nodes
    )


def sizes(fleet: Fleet) -> list[float]:
    found = [fleet.daemon_pid(node) for node in fleet.nodes]
    return [round((procs.rss_bytes(pid) or 0) / MIB, 1) for pid in found if pid]


async def measure(baseline: Path, daemons: int, settle: float, state: Path) -> dict[str, Any]:
    await asyncio.to_thread(compile_bytecode)
    compileall.compile_dir(baseline / "kured", quiet=2, optimize=2, workers=0)
    plane = ControlPlane.start(state)
    try:
        async with plane.client() as client:
            fleets = {
                "baseline": await Fleet.start(
                    plane, client, FleetConfig("base", daemons, 1, 1.0, 0.2), kured_namespace="b"
                ),
                "this": await Fleet.start(
                    plane, client, FleetConfig("this", daemons, 1, 1.0, 0.2), kured_namespace="t"
                ),
            }
            await run_tree(client, fleets["baseline"], baseline)
            await run_tree(client, fleets["this"], None)
            for fleet in fleets.values():
                check = functools.partial(reported, client, fleet)
                await wait_until(check, what="the daemons' reports", within=180)
            await asyncio.sleep(settle)
            figures = {name: sizes(fleet) for name, fleet in fleets.items()}
            for fleet in fleets.values():
                await fleet.stop()
    finally:
        plane.stop()
    return {
        "baseline_source": str(baseline),
        "this_source": str(Path(kured.__file__).parent.parent),
        "settle_seconds": settle,
        "vmrss_mib": figures,
        "median_mib": {name: statistics.median(values) for name, values in figures.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m kured_testbed.rss", description=__doc__)
    parser.add_argument("--baseline", type=Path, required=True, help="a src/ holding kured")
    parser.add_argument("--daemons", type=int, default=3, help="daemons per tree")
    parser.add_argument("--settle", type=float, default=75.0, help="seconds after the reports")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kured-rss-") as state:
        baseline = args.baseline.resolve()
        result = asyncio.run(measure(baseline, args.daemons, args.settle, Path(state)))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
