"""Many kured agents in one process: the scale benchmark's stand-in for a DaemonSet of 200.

A kured process per node would need gigabytes on a laptop, so each node gets an
:class:`kured.agent.Agent` task instead, built as :func:`kured.agent.run_daemon` builds it
(flags through kured's own parser, kured's SimulatedHost on the node's directory) minus the
HTTP server. The fleet's supervisor still plays the kubelets and reboots the hosts; it runs
no daemons because the fleet has no daemon spec. What a reboot does to a daemon is done here:
the agent task is cancelled when it commands the reboot (the host goes down) and a new one
starts once the Node is Ready with a new boot id (the kubelet starts the pod again).

Each agent has its own :class:`kured.kube.Kube`, as each daemon has its own connections: one
shared client would queue 200 lock watches behind httpx's pool of 100 connections.

The benchmark runs them in a process of their own, so that its watches time the roll from
outside, on an event loop the agents do not keep busy:

    python -m kured_testbed.manyagents --state-dir DIR --fleet F --kubeconfig K -- FLAGS…

runs until SIGTERM, or until the process that started it is gone. It logs at WARNING, each
line with its node; ``KURED_SANDBOX_AGENTS_LOG=INFO`` logs what each daemon would, and
``KURED_SANDBOX_AGENTS_PROFILE=FILE`` writes a cProfile of the run to FILE when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import signal
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from pathlib import Path

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node

from kured.agent import HEALTH_STUCK_SECONDS, Agent
from kured.args import parse_args
from kured.config import Config
from kured.host import SimulatedHost
from kured.kube import Kube, load_config
from kured.metrics import Health, Metrics
from kured_testbed.controlplane import ControlPlane
from kured_testbed.fleet import FleetConfig
from kured_testbed.state import FLEET_LABEL, NodeDir

log = logging.getLogger("kured_testbed.manyagents")
_NODE: ContextVar[str] = ContextVar("node", default="-")


class _NodeField(logging.Filter):
    """Names the node in each line: the agents of 200 nodes share one log."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = _NODE.get()
        return True


class HostGoingDown(SimulatedHost):
    """kured's simulated host, which also says when its node goes down."""

    def __init__(self, config: Config, node_dir: Path, down: asyncio.Event) -> None:
        super().__init__(config, node_dir)
        self.down = down

    async def reboot(self) -> None:
        """Request the reboot and never return, as a host going down: the agent is stopped
        by cancelling its task, and until then it must not evaluate (and reboot) again."""
        await super().reboot()
        self.down.set()
        await asyncio.Future()


class Boots:
    """The boot id each node's kubelet reports while the node is Ready (one Node watch)."""

    def __init__(self) -> None:
        self.ready: dict[str, str] = {}
        self._changed = asyncio.Condition()

    async def follow(self, client: AsyncClient, fleet: str) -> None:
        async for _event, node in client.watch(Node, labels={FLEET_LABEL: fleet}):
            await self.see(node)

    async def see(self, node: Node) -> None:
        name = str(node.metadata.name if node.metadata else "")
        status = node.status
        conditions = (status.conditions if status else None) or []
        if any(c.type == "Ready" and c.status == "True" for c in conditions):
            self.ready[name] = status.nodeInfo.bootID if status and status.nodeInfo else ""
        else:
            self.ready.pop(name, None)
        async with self._changed:
            self._changed.notify_all()

    async def back_up(self, node: str, before: str) -> None:
        """Wait until the node is Ready with a boot id other than `before`."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.ready.get(node, before) != before)


class ManyAgents:
    """One agent per node, for the whole life of the fleet, across reboots."""

    def __init__(
        self, nodes: Sequence[tuple[str, NodeDir]], kubeconfig: Path, flags: Sequence[str]
    ) -> None:
        self.nodes = list(nodes)
        self.kubeconfig = kubeconfig
        self.flags = list(flags)
        self.boots = Boots()

    async def run(self, client: AsyncClient, fleet: str) -> None:
        """Until cancelled; an agent that fails on its own (a bug) ends the whole run."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.boots.follow(client, fleet))
            for name, node_dir in self.nodes:
                tasks.create_task(self._life(name, node_dir))

    def config(self, name: str, node_dir: NodeDir) -> Config:
        """The node's configuration, through the flag parser the daemon uses."""
        argv = ["--node-id", name, "--reboot-sentinel", str(node_dir.sentinel)]
        argv += ["--kubeconfig", str(self.kubeconfig), *self.flags]
        return parse_args(argv).config

    async def _life(self, name: str, node_dir: NodeDir) -> None:
        _NODE.set(name)  # for this task and every task it starts
        config = self.config(name, node_dir)
        while True:
            host = HostGoingDown(config, node_dir.path, asyncio.Event())
            before = host.boot_id()
            await self._run_until_down(config, host)
            await self.boots.back_up(name, before)

    async def _run_until_down(self, config: Config, host: HostGoingDown) -> None:
        """Run one agent lifetime: from its start to the reboot it commands."""
        async with Kube(load_config(str(self.kubeconfig))) as kube:
            metrics, health = Metrics(config.node_id), Health(stuck_after=HEALTH_STUCK_SECONDS)
            agent = Agent.wired(config, host, kube, metrics, health)
            running = asyncio.create_task(agent.run())
            going_down = asyncio.create_task(host.down.wait())
            try:
                done, _ = await asyncio.wait(
                    {running, going_down}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (running, going_down):
                    task.cancel()
                await asyncio.gather(running, going_down, return_exceptions=True)
            if running in done:
                running.result()  # the agent ended by itself: raise what it raised


async def _parent_exit() -> None:
    """Return once the process that started this one has exited (a pidfd on it turns
    readable), so a benchmark killed outright leaves no agents behind."""
    fd = os.pidfd_open(os.getppid())
    exited = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, exited.set)
    try:
        await exited.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _serve(
    state_dir: Path, fleet: str, kubeconfig: Path, flags: list[str], stopping: Callable[[], None]
) -> None:
    plane = ControlPlane.attach(state_dir)
    names = FleetConfig.load(plane.state, fleet).node_names()
    agents = ManyAgents([(name, plane.state.node(name)) for name in names], kubeconfig, flags)
    async with plane.client() as client:
        running = asyncio.create_task(agents.run(client, fleet))
        stop = asyncio.create_task(_parent_exit())
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.cancel)
        try:
            await asyncio.wait({running, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        if running.done() and not running.cancelled():
            running.result()  # an agent failed by itself (a bug): exit with its traceback


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kured_testbed.manyagents")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--fleet", required=True)
    parser.add_argument("--kubeconfig", type=Path, required=True, help="the agents' identity")
    parser.add_argument("flags", nargs="*", help="kured flags, after --")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.addFilter(_NodeField())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(node)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("kured").setLevel(os.environ.get("KURED_SANDBOX_AGENTS_LOG", "WARNING"))
    stopping = _Profile(os.environ.get("KURED_SANDBOX_AGENTS_PROFILE"))
    asyncio.run(_serve(args.state_dir, args.fleet, args.kubeconfig, args.flags, stopping.save))


class _Profile:
    """cProfile of the agents' run, saved the moment they are told to stop (the benchmark
    kills a process slow to exit), with the CPU time they used."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.profile = cProfile.Profile() if path else None
        if self.profile:
            self.profile.enable()

    def save(self) -> None:
        times = os.times()
        log.warning("agents stopping: %.1f CPU seconds", times.user + times.system)
        if self.profile and self.path:
            self.profile.disable()
            self.profile.dump_stats(self.path)


if __name__ == "__main__":
    main()
