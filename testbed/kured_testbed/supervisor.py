"""The background process behind one fleet (`kured-sandbox _supervise`): the simulated kubelets
of its nodes, their simulated hosts, and their kured processes, until SIGTERM.

A node reboots when its daemon asks (the reboot-requested file of the command method) or when
its PID 1 stand-in dies (the signal method): daemon killed, NotReady for --reboot-seconds,
new boot id, sentinel gone, Ready again, pods and daemon started again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time

from lightkube import AsyncClient

from kured_testbed import procs
from kured_testbed.controlplane import ControlPlane
from kured_testbed.daemons import Daemons
from kured_testbed.fleet import FleetConfig
from kured_testbed.nodesim import Kubelet
from kured_testbed.simhost import SimulatedHost
from kured_testbed.state import SandboxState

log = logging.getLogger("kured_testbed.supervisor")

_REQUEST_POLL_SECONDS = 0.2


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"signal {-code}"
    return f"exit status {code}"


class Supervisor:
    def __init__(
        self, state: SandboxState, config: FleetConfig, client: AsyncClient, kubelet_version: str
    ) -> None:
        self.config = config
        names = config.node_names()
        self.hosts = {name: SimulatedHost(state.node(name)) for name in names}
        self.kubelet = Kubelet(
            client,
            config,
            {name: host.boot_id() for name, host in self.hosts.items()},
            kubelet_version,
        )
        self.daemons = Daemons(state, state.fleet(config.name), names)
        self.inits: dict[str, subprocess.Popen[bytes]] = {}

    async def run(self) -> None:
        await self.kubelet.register()
        log.info("fleet %s: %d nodes registered", self.config.name, self.config.nodes)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.kubelet.run())
                group.create_task(self.daemons.follow_spec())
                for name in self.hosts:
                    group.create_task(self._node_life(name))
        finally:
            await self._shutdown()

    async def _node_life(self, name: str) -> None:
        """Boot after boot: run the PID 1 stand-in until something asks for a reboot."""
        host = self.hosts[name]
        while True:
            init = self.inits[name] = host.start_init()
            reason = await self._reboot_reason(host, init)
            if init.poll() is None:
                procs.signal_group(init.pid, signal.SIGKILL)
                await procs.wait_exit(init)
            await self._reboot(name, reason)

    async def _reboot_reason(self, host: SimulatedHost, init: subprocess.Popen[bytes]) -> str:
        died = asyncio.create_task(procs.wait_exit(init))
        try:
            while not died.done():
                if (request := host.take_reboot_request()) is not None:
                    return f"reboot requested: {request}"
                await asyncio.wait({died}, timeout=_REQUEST_POLL_SECONDS)
            return f"init stand-in got {_describe_exit(died.result())}"
        finally:
            died.cancel()

    async def _reboot(self, name: str, reason: str) -> None:
        host = self.hosts[name]
        old_boot_id = self.kubelet.nodes[name].boot_id
        down = time.time()
        log.info("%s: rebooting (%s)", name, reason)
        await self.daemons.kill(name)
        await self.kubelet.go_down(name)
        await asyncio.sleep(self.config.reboot_seconds)
        boot_id = host.boot()
        host.record_reboot(old_boot_id, boot_id, reason, down)
        await self.kubelet.come_up(name, boot_id)
        self.daemons.start(name)
        log.info("%s: up again, boot id %s", name, boot_id)

    async def _shutdown(self) -> None:
        """Stop what this process started; the Node objects stay (`down` ends everything)."""
        self.kubelet.close()
        await self.daemons.close()
        inits = [proc.pid for proc in self.inits.values() if proc.poll() is None]
        procs.terminate(inits, timeout=1.0)
        for host in self.hosts.values():
            procs.remove_pid_file(host.dir.init_pid)


async def supervise(state: SandboxState, fleet: str) -> None:
    """The `_supervise` command: run the fleet until SIGTERM or SIGINT."""
    config = FleetConfig.load(state, fleet)
    plane = ControlPlane.attach(state.root)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    async with plane.client(state.component_kubeconfig("kubelet")) as client:
        try:
            await Supervisor(state, config, client, plane.version).run()
        except asyncio.CancelledError:
            log.info("fleet %s: stopped", fleet)
