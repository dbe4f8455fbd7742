"""The fleet's kured processes, one per node, as a DaemonSet and the kubelet would keep them:
restarted after a crash (with back-off), killed by a node's reboot and started again after it,
replaced when `run-kured` writes a new spec, stopped when `stop-kured` removes it.
"""

from __future__ import annotations

import asyncio
import compileall
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import kured
from kured_testbed import procs
from kured_testbed.fleet import supervisor_pid_file
from kured_testbed.state import (
    FleetDir,
    NodeDir,
    SandboxError,
    SandboxState,
    atomic_write,
    read_json,
)

log = logging.getLogger("kured_testbed.daemons")

NODE_PLACEHOLDER = "{node}"
NODE_DIR_PLACEHOLDER = "{node_dir}"
_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 10.0
# A daemon that ran this long before exiting starts again without accumulated back-off.
_STABLE_SECONDS = 30.0
_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class DaemonSpec:
    """What to run on every node: a command template ({node}, {node_dir} substituted) and
    extra environment. The generation tells the supervisor that a spec is new."""

    command: list[str]
    env: dict[str, str]
    generation: str = ""

    def argv(self, node: str, node_dir: NodeDir) -> list[str]:
        return [
            arg.replace(NODE_PLACEHOLDER, node).replace(NODE_DIR_PLACEHOLDER, str(node_dir.path))
            for arg in self.command
        ]

    def environ(self, node_dir: NodeDir) -> dict[str, str]:
        return {
            **os.environ,
            **self.env,
            "KURED_SANDBOX_NODE_DIR": str(node_dir.path),
            "PYTHONUNBUFFERED": "1",
        }

    def save(self, fleet: FleetDir) -> DaemonSpec:
        """Write the spec under a new generation (returned) for the supervisor to apply."""
        spec = DaemonSpec(self.command, self.env, uuid.uuid4().hex)
        atomic_write(fleet.daemon_spec, json.dumps(asdict(spec), indent=2) + "\n")
        return spec

    @classmethod
    def load(cls, fleet: FleetDir) -> DaemonSpec | None:
        data = read_json(fleet.daemon_spec)
        return None if data is None else cls(**data)


class Daemons:
    """The kured processes of one fleet's nodes (owned by its supervisor)."""

    def __init__(self, state: SandboxState, fleet: FleetDir, nodes: list[str]) -> None:
        self.state = state
        self.fleet = fleet
        self.spec: DaemonSpec | None = None
        self.up = set(nodes)
        self.keepers: dict[str, asyncio.Task[None]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: str) -> None:
        """The node is up: run its daemon (if there is a spec)."""
        self.up.add(node)
        if self.spec is not None and node not in self.keepers:
            self.keepers[node] = asyncio.create_task(self._keep(node, self.spec))

    async def kill(self, node: str) -> None:
        """The node goes down: its daemon dies at once (SIGKILL, as in a reboot)."""
        self.up.discard(node)
        await self._stop([node], signal.SIGKILL)

    async def follow_spec(self) -> None:
        """Apply each new spec the CLI writes (or its removal), acknowledging each."""
        while True:
            spec = DaemonSpec.load(self.fleet)
            generation = spec.generation if spec else ""
            if generation != (self.spec.generation if self.spec else ""):
                await self._replace(spec)
                atomic_write(self.fleet.daemon_applied, generation + "\n")
            await asyncio.sleep(_POLL_SECONDS)

    async def _replace(self, spec: DaemonSpec | None) -> None:
        await self._stop(list(self.keepers), signal.SIGTERM)
        self.spec = spec
        log.info("daemon spec %s", spec.generation if spec else "removed")
        for node in sorted(self.up):
            self.start(node)

    async def _stop(self, nodes: list[str], sig: int) -> None:
        """Stop the daemons of nodes: sig first, SIGKILL after 5 s."""
        for node in nodes:
            if keeper := self.keepers.pop(node, None):
                keeper.cancel()
        running = [(node, proc) for node in nodes if (proc := self.procs.pop(node, None))]
        for _, proc in running:
            procs.signal_group(proc.pid, sig)
        for node, proc in running:
            try:
                await asyncio.wait_for(procs.wait_exit(proc), timeout=5.0)
            except TimeoutError:
                procs.signal_group(proc.pid, signal.SIGKILL)
                await procs.wait_exit(proc)
            procs.remove_pid_file(self.state.node(node).kured_pid)

    async def _keep(self, node: str, spec: DaemonSpec) -> None:
        """Run the node's daemon, restarting it whenever it exits, with back-off."""
        node_dir = self.state.node(node)
        backoff = _FIRST_BACKOFF
        while True:
            started = time.monotonic()
            outcome = await self._run_once(node, node_dir, spec)
            if time.monotonic() - started > _STABLE_SECONDS:
                backoff = _FIRST_BACKOFF
            log.info("%s: daemon %s, restarting in %.1f s", node, outcome, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _run_once(self, node: str, node_dir: NodeDir, spec: DaemonSpec) -> str:
        """Run the daemon until it exits; how it ended."""
        try:
            proc = procs.spawn(
                spec.argv(node, node_dir),
                log=node_dir.kured_log,
                pid_file=node_dir.kured_pid,
                env=spec.environ(node_dir),
            )
        except OSError as error:
            return f"could not start: {error}"
        self.procs[node] = proc
        code = await procs.wait_exit(proc)
        self.procs.pop(node, None)
        return f"exited with {code}"

    async def close(self) -> None:
        await self._stop(sorted(set(self.procs) | set(self.keepers)), signal.SIGTERM)


@functools.cache
def compile_bytecode() -> None:
    """Byte-compile kured and the venv's packages, as the image's build does (and, as the image,
    for no PYTHONOPTIMIZE: kuredctl's --help is made of docstrings): daemons that compiled them
    from source at every start (``PYTHONDONTWRITEBYTECODE``) would each spend a second of CPU on
    it and keep 3 MiB more RSS. Once per process; quick when nothing changed."""
    for directory in (Path(kured.__file__).parent, Path(sysconfig.get_paths()["purelib"])):
        compileall.compile_dir(directory, quiet=2, optimize=0, workers=0)


def kured_command(kubeconfig: Path, namespace: str, flags: list[str]) -> list[str]:
    """The per-node kured command line; the user's flags come last so they win. It runs the
    ``kured`` script the package installs, as the image's entrypoint does (``python -m kured``
    would also load runpy and its imports: 0.5 MiB more RSS)."""
    return [
        sys.executable,
        str(Path(sysconfig.get_path("scripts")) / "kured"),
        "--node-id",
        NODE_PLACEHOLDER,
        "--reboot-sentinel",
        f"{NODE_DIR_PLACEHOLDER}/reboot-required",
        "--kubeconfig",
        str(kubeconfig),
        "--ds-namespace",
        namespace,
        # Many daemons share one machine: loopback only, each on a free port.
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        "0",
        *flags,
    ]


async def set_daemons(
    state: SandboxState, fleet: str, spec: DaemonSpec | None, within: float = 30.0
) -> None:
    """Hand the fleet's supervisor a new spec (None: stop the daemons) and wait until it has
    applied it."""
    fleet_dir = state.fleet(fleet)
    if spec is None:
        fleet_dir.daemon_spec.unlink(missing_ok=True)
        generation = ""
    else:
        generation = spec.save(fleet_dir).generation
    pid_file = supervisor_pid_file(state, fleet)
    deadline = time.monotonic() + within
    while _applied(fleet_dir) != generation:
        if procs.running_pid(pid_file) is None:
            raise SandboxError(f"the supervisor of fleet {fleet!r} is not running")
        if time.monotonic() > deadline:
            raise SandboxError(f"the supervisor of fleet {fleet!r} did not apply the daemon spec")
        await asyncio.sleep(0.1)


def _applied(fleet_dir: FleetDir) -> str:
    try:
        return fleet_dir.daemon_applied.read_text().strip()
    except FileNotFoundError:
        return ""
