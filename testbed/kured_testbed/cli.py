"""`kured-sandbox`: a real local control plane with simulated nodes, for the e2e tests, the
demo and the benchmarks. Tests and outside checks script these commands, so they stay stable:

    kured-sandbox up --state-dir DIR --nodes N [--reboot-seconds S] [--zones Z] [--fleet F]
    kured-sandbox workload --state-dir DIR [--fleet F]
    kured-sandbox run-kured --state-dir DIR [--as-serviceaccount] [--raw] -- ARGS…
    kured-sandbox stop-kured --state-dir DIR [--fleet F]
    kured-sandbox trigger --state-dir DIR [NODE…]
    kured-sandbox kill --state-dir DIR NODE [--signal KILL]
    kured-sandbox status --state-dir DIR [--json]
    kured-sandbox down --state-dir DIR

Errors are one line (`kured-sandbox: error: …`): exit 2 for bad usage, 1 for failures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import httpx2
from lightkube import ApiError

from kured_testbed import api
from kured_testbed.controlplane import ControlPlane, down
from kured_testbed.fleet import FleetConfig
from kured_testbed.manifests import SYSTEM_NAMESPACE, default_manifests
from kured_testbed.run import run_kured, stop_kured
from kured_testbed.state import DEFAULT_FLEET, SandboxError, SandboxState, UsageError
from kured_testbed.supervisor import supervise
from kured_testbed.workload import deploy_workload

PROG = "kured-sandbox"
log = logging.getLogger("kured_testbed")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _state(args: argparse.Namespace) -> SandboxState:
    return SandboxState(Path(args.state_dir).resolve())


def _attach(args: argparse.Namespace) -> ControlPlane:
    return ControlPlane.attach(_state(args).root)


# --- commands ------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> None:
    config = FleetConfig(args.fleet, args.nodes, args.zones, args.reboot_seconds)
    began = time.monotonic()
    plane = ControlPlane.start(_state(args).root, apiserver_port=args.apiserver_port)
    log.info("control plane ready in %.1f s (%s)", time.monotonic() - began, plane.server)

    async def start_fleet() -> None:
        async with plane.client() as client:
            await api.Fleet.start(plane, client, config)

    try:
        asyncio.run(start_fleet())
    except BaseException:
        plane.stop()
        raise
    log.info("%d nodes Ready, %.1f s after the start", config.nodes, time.monotonic() - began)
    print(plane.kubeconfig)


def cmd_workload(args: argparse.Namespace) -> None:
    plane = _attach(args)
    config = FleetConfig.load(plane.state, args.fleet)

    async def deploy() -> str:
        async with plane.client() as client:
            return await deploy_workload(
                client,
                config,
                namespace=args.namespace,
                replicas=args.replicas,
                stop_seconds=args.stop_seconds,
                within=args.timeout,
            )

    print(asyncio.run(deploy()))


def cmd_run_kured(args: argparse.Namespace) -> None:
    plane = _attach(args)
    command = list(args.args)
    if command[:1] == ["--"]:
        command = command[1:]
    manifests = None if args.no_manifests else args.manifests or default_manifests()

    async def run() -> None:
        async with plane.client() as client:
            await run_kured(
                plane,
                client,
                args.fleet,
                command,
                namespace=args.namespace,
                manifests=manifests,
                as_serviceaccount=args.as_serviceaccount,
                raw=args.raw,
            )

    asyncio.run(run())


def cmd_stop_kured(args: argparse.Namespace) -> None:
    asyncio.run(stop_kured(_attach(args), args.fleet))


def cmd_trigger(args: argparse.Namespace) -> None:
    state = _state(args)
    state.require()
    nodes = args.nodes or api.all_nodes(state, args.fleet)
    api.trigger(state, nodes)
    log.info("reboot required on %d node(s)", len(nodes))


def _signal_number(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return int(signal.Signals["SIG" + name.upper().removeprefix("SIG")])
    except KeyError:
        raise UsageError(f"unknown signal {name!r}") from None


def cmd_kill(args: argparse.Namespace) -> None:
    state = _state(args)
    state.require()
    sig = _signal_number(args.signal)
    pid = api.kill_daemon(state, args.node, sig)
    log.info("sent signal %d to the daemon of %s (pid %d)", sig, args.node, pid)


def _print_table(status: dict[str, Any]) -> None:
    print(f"server {status['server']}  kubeconfig {status['kubeconfig']}")
    header = ("NODE", "READY", "UNSCHEDULABLE", "BOOT-ID", "SENTINEL", "DAEMON-PID", "REBOOTS")
    rows = [
        (
            row["name"],
            str(row["ready"]).lower(),
            str(row["unschedulable"]).lower(),
            (row["boot_id"] or "-")[:8],
            "yes" if row["sentinel"] else "no",
            str(row["daemon_pid"] or "-"),
            str(row["reboots"]),
        )
        for row in status["nodes"]
    ]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))


def cmd_status(args: argparse.Namespace) -> None:
    plane = _attach(args)

    async def collect() -> dict[str, Any]:
        async with plane.client() as client:
            return await api.status(plane, client)

    status = asyncio.run(collect())
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print_table(status)


def cmd_down(args: argparse.Namespace) -> None:
    state = _state(args)
    if state.root.is_dir():
        down(state)
    log.info("stopped everything in %s", state.root)


def cmd_supervise(args: argparse.Namespace) -> None:
    _logging("%(asctime)s %(name)s %(message)s")
    asyncio.run(supervise(_state(args), args.fleet))


# --- parser --------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value:g}")
    return value


Command = Callable[[argparse.Namespace], None]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="A local Kubernetes control plane with simulated nodes."
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, handler: Command, help_text: str | None) -> argparse.ArgumentParser:
        # A command without help (the hidden _supervise) is not listed.
        cmd = (
            sub.add_parser(name, help=help_text, description=help_text)
            if help_text
            else sub.add_parser(name)
        )
        cmd.add_argument("--state-dir", required=True, help="the sandbox's state directory")
        cmd.set_defaults(handler=handler)
        return cmd

    def with_fleet(cmd: argparse.ArgumentParser, default: str | None = DEFAULT_FLEET) -> None:
        cmd.add_argument("--fleet", default=default, help=f"fleet name (default {default})")

    up = command("up", cmd_up, "start the control plane and N simulated nodes")
    up.add_argument("--nodes", type=_positive_int, default=3)
    up.add_argument("--reboot-seconds", type=_seconds, default=5.0, help="time a reboot takes")
    up.add_argument("--zones", type=_positive_int, default=3)
    up.add_argument("--apiserver-port", type=_positive_int, help="default: a free port")
    with_fleet(up)

    workload = command("workload", cmd_workload, "Deployments with PDBs on the fleet's nodes")
    workload.add_argument("--namespace", help="default: <fleet>-workload")
    workload.add_argument("--replicas", type=_positive_int, help="replicas of 'web'")
    workload.add_argument("--stop-seconds", type=_seconds, default=1.0)
    workload.add_argument("--timeout", type=_seconds, default=60.0)
    with_fleet(workload)

    run = command("run-kured", cmd_run_kured, "run one kured per node (args after --)")
    run.add_argument("--namespace", default=SYSTEM_NAMESPACE, help="where the DaemonSet goes")
    run.add_argument(
        "--manifests",
        type=Path,
        action="append",
        help="a manifest file or a directory of *.yaml, repeatable "
        "(default: <repo>/deploy/rbac.yaml and daemonset.yaml)",
    )
    run.add_argument("--no-manifests", action="store_true", help="apply no manifests")
    run.add_argument(
        "--as-serviceaccount",
        action="store_true",
        help="authenticate as the DaemonSet's ServiceAccount (only the manifests' RBAC)",
    )
    run.add_argument("--raw", action="store_true", help="args are the whole command")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="-- ARGS", help="kured flags")
    with_fleet(run)

    stop = command("stop-kured", cmd_stop_kured, "stop the fleet's daemons")
    with_fleet(stop)

    trigger = command("trigger", cmd_trigger, "make nodes require a reboot (default: all)")
    trigger.add_argument("nodes", nargs="*")
    with_fleet(trigger, default=None)

    kill = command("kill", cmd_kill, "crash a node's daemon (it restarts)")
    kill.add_argument("node")
    kill.add_argument("--signal", default="KILL")

    status = command("status", cmd_status, "nodes, boot ids, sentinels, daemons")
    status.add_argument("--json", action="store_true")

    command("down", cmd_down, "stop every process the sandbox started")

    supervise_cmd = command("_supervise", cmd_supervise, None)
    with_fleet(supervise_cmd)
    return parser


def _run(handler: Command, args: argparse.Namespace) -> int:
    try:
        handler(args)
    except UsageError as error:
        return _fail(error, 2)
    except (SandboxError, ApiError, httpx2.HTTPError, OSError) as error:
        return _fail(error, 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return 0


def _fail(error: object, code: int) -> int:
    text = str(error).strip() or repr(error)
    print(f"{PROG}: error: {text.splitlines()[0]}", file=sys.stderr)
    return code


def _logging(fmt: str) -> None:
    """The sandbox's own messages at INFO; other libraries' (an HTTP line per request) only
    when something is wrong."""
    logging.basicConfig(level=logging.WARNING, format=fmt, force=True)
    logging.getLogger("kured_testbed").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    _logging(f"{PROG}: %(message)s")
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        sys.exit(_fail(error, 2))
    sys.exit(_run(args.handler, args))
