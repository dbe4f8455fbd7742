"""`kured-lab`: the real-node lab (QEMU guests as Nodes, kured installed as users deploy it).

    kured-lab up --state-dir S --nodes N [--reboot-method command|signal]
                 [--install manifests|helm] [--values FILE] [--accel tcg|kvm]
    kured-lab exec --state-dir S NODE -- CMD...      (CMD's exit code is kured-lab's)
    kured-lab status --state-dir S
    kured-lab down --state-dir S

Errors are one line (`kured-lab: error: ...`): exit 2 for bad usage, 1 for failures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import httpx2
from lightkube import ApiError

from kured_testbed.lab import agent, status, up
from kured_testbed.lab.guests import GuestDir, guests_root
from kured_testbed.state import SandboxError, UsageError

PROG = "kured-lab"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="QEMU guests as real Nodes, with kured")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--state-dir", type=Path, required=True)
        return sub

    start = command("up", "start the control plane and N guests, install kured")
    start.add_argument("--nodes", type=_positive, default=3)
    start.add_argument("--reboot-method", choices=("command", "signal"), default="command")
    start.add_argument("--install", choices=("manifests", "helm"), default="manifests")
    start.add_argument("--values", type=Path, help="Helm values file (with --install helm)")
    start.add_argument("--accel", choices=("tcg", "kvm"), default="tcg")

    run = command("exec", "run a command as root in a guest")
    run.add_argument("node")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD")

    command("status", "guests, nodes and boot ids")
    command("down", "stop every process the lab started")
    return parser


def _up(args: argparse.Namespace) -> int:
    if args.values is not None and args.install != "helm":
        raise UsageError("--values needs --install helm")
    if args.values is not None and not args.values.is_file():
        raise UsageError(f"--values: no such file {args.values}")
    settings = up.LabSettings(args.nodes, args.reboot_method, args.install, args.values, args.accel)
    phases = asyncio.run(up.up(args.state_dir.resolve(), settings))
    total = " ".join(f"{name} {seconds:g} s;" for name, seconds in phases.seconds.items())
    print(f"lab up: {total} admin kubeconfig: {args.state_dir.resolve() / 'kubeconfig'}")
    return 0


def _exec(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise UsageError("exec needs a command after --")
    up.settings_of(args.state_dir)
    guest = GuestDir(guests_root(args.state_dir.resolve()) / args.node)
    if guest.pid() is None:
        raise SandboxError(f"no running guest {args.node} in {args.state_dir}")
    result = asyncio.run(agent.run(guest, argv))
    sys.stdout.buffer.write(result.stdout)
    sys.stderr.buffer.write(result.stderr)
    return result.exit_code


def _status(args: argparse.Namespace) -> int:
    up.settings_of(args.state_dir)
    for line in asyncio.run(status.lines(args.state_dir.resolve())):
        print(line)
    return 0


def _down(args: argparse.Namespace) -> int:
    up.down(args.state_dir)
    return 0


_HANDLERS = {"up": _up, "exec": _exec, "status": _status, "down": _down}


def _fail(error: object, code: int) -> int:
    text = str(error).strip() or repr(error)
    print(f"{PROG}: error: {text.splitlines()[0]}", file=sys.stderr)
    return code


def run_command(command: Callable[[], int]) -> NoReturn:
    """Run a command of the lab, its failures as one line: exit 2 for bad usage, 1 else."""
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s", force=True)
    logging.getLogger("kured_testbed").setLevel(logging.INFO)
    try:
        code = command()
    except UsageError as error:
        code = _fail(error, 2)
    except (SandboxError, ApiError, httpx2.HTTPError, OSError) as error:
        code = _fail(error, 1)
    except KeyboardInterrupt:
        code = _fail("interrupted", 130)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    def command() -> int:
        args = build_parser().parse_args(argv)
        return _HANDLERS[args.command](args)

    run_command(command)


if __name__ == "__main__":
    main()
