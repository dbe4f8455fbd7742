"""The sandbox as a Python API: what the CLI commands do, for the e2e fixtures, the demo and
the benchmarks, so that tests read like the CLI.

    plane = ControlPlane.start(state_dir)
    async with plane.client() as client:
        fleet = await Fleet.start(plane, client, FleetConfig("web", nodes=3))
        await fleet.workload()
        await fleet.run_kured(["--period", "10s"])
        fleet.trigger()
        ...
        await fleet.stop()
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lightkube import ApiError, AsyncClient
from lightkube.core.resource import GlobalResource
from lightkube.resources.core_v1 import Namespace, Node

from kured_testbed import procs
from kured_testbed.controlplane import ControlPlane
from kured_testbed.fleet import (
    FleetConfig,
    delete_nodes,
    fleet_nodes,
    start_supervisor,
    stop_supervisor,
    supervisor_pid_file,
    wait_ready,
)
from kured_testbed.manifests import CLUSTER_KINDS, SYSTEM_NAMESPACE, default_manifests
from kured_testbed.run import run_kured, stop_kured
from kured_testbed.simhost import SimulatedHost
from kured_testbed.state import SandboxError, SandboxState, UsageError
from kured_testbed.workload import deploy_workload

__all__ = [
    "Fleet",
    "FleetConfig",
    "FleetFactory",
    "all_nodes",
    "audit_events",
    "daemon_pid",
    "default_manifests",
    "host",
    "kill_daemon",
    "node_row",
    "reboots",
    "status",
    "trigger",
    "wait_until",
]

_NOT_FOUND = 404
T = TypeVar("T")


def host(state: SandboxState, node: str) -> SimulatedHost:
    """A node's simulated host (one-line error for a node the sandbox does not have)."""
    simulated = SimulatedHost(state.node(node))
    if not simulated.dir.path.is_dir():
        raise UsageError(f"unknown node {node!r} in {state.root}")
    return simulated


def all_nodes(state: SandboxState, fleet: str | None = None) -> list[str]:
    fleets = [fleet] if fleet else [f.name for f in state.fleets()]
    return [name for f in fleets for name in FleetConfig.load(state, f).node_names()]


def trigger(state: SandboxState, nodes: list[str]) -> None:
    """Make nodes require a reboot, as a package upgrade would."""
    hosts = [host(state, node) for node in nodes]
    for simulated in hosts:
        simulated.require_reboot()


def kill_daemon(state: SandboxState, node: str, sig: int = signal.SIGKILL) -> int:
    """Signal a node's daemon (a crash; its supervisor restarts it); returns the PID."""
    pid = procs.running_pid(host(state, node).dir.kured_pid)
    if pid is None:
        raise SandboxError(f"no daemon is running on {node}")
    os.kill(pid, sig)
    return pid


def daemon_pid(state: SandboxState, node: str) -> int | None:
    return procs.running_pid(state.node(node).kured_pid)


def reboots(state: SandboxState, node: str) -> list[dict[str, Any]]:
    """The node's simulated reboots so far, oldest first."""
    path = state.node(node).reboots
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def audit_events(state: SandboxState) -> Iterator[dict[str, Any]]:
    """Every event in the API server's audit log so far (JSON lines)."""
    with state.audit_log.open() as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def node_row(state: SandboxState, fleet: str, name: str, node: Node | None) -> dict[str, Any]:
    """One node as `kured-sandbox status` shows it."""
    node_dir = state.node(name)
    status = node.status if node else None
    conditions = (status.conditions if status else None) or []
    return {
        "name": name,
        "fleet": fleet,
        "registered": node is not None,
        "ready": any(c.type == "Ready" and c.status == "True" for c in conditions),
        "unschedulable": bool(node and node.spec and node.spec.unschedulable),
        "boot_id": status.nodeInfo.bootID if status and status.nodeInfo else None,
        "sentinel": node_dir.sentinel.exists(),
        "daemon_pid": procs.running_pid(node_dir.kured_pid),
        "reboots": len(reboots(state, name)),
    }


async def _nodes_by_name(client: AsyncClient, fleets: list[str]) -> dict[str, Node]:
    listed = await asyncio.gather(*(fleet_nodes(client, fleet) for fleet in fleets))
    return {str(n.metadata.name): n for nodes in listed for n in nodes if n.metadata}


async def status(plane: ControlPlane, client: AsyncClient) -> dict[str, Any]:
    """`kured-sandbox status --json`: the control plane and every fleet's nodes."""
    state = plane.state
    fleets = [f.name for f in state.fleets()]
    known = await _nodes_by_name(client, fleets)
    return {
        "server": plane.server,
        "kubeconfig": str(plane.kubeconfig),
        "control_plane": {name: {"rss_bytes": size} for name, size in sorted(plane.rss().items())},
        "fleets": {
            fleet: {"supervisor_pid": procs.running_pid(supervisor_pid_file(state, fleet))}
            for fleet in fleets
        },
        "nodes": [
            node_row(state, fleet, name, known.get(name))
            for fleet in fleets
            for name in FleetConfig.load(state, fleet).node_names()
        ],
    }


class FleetFactory(Protocol):
    """The e2e `fleet` fixture: starts a fleet with a fresh name, stopped after the test."""

    def __call__(
        self,
        nodes: int = 3,
        *,
        reboot_seconds: float = 1.0,
        zones: int = 3,
        pod_start_seconds: float = 0.2,
    ) -> Awaitable[Fleet]: ...


class Fleet:
    """A running fleet: its nodes' kubelets and hosts simulated by a supervisor process."""

    def __init__(
        self, plane: ControlPlane, client: AsyncClient, config: FleetConfig, kured_namespace: str
    ) -> None:
        self.plane = plane
        self.client = client
        self.config = config
        self.kured_namespace = kured_namespace
        self.namespaces: set[str] = set()
        self.cluster_objects: set[tuple[str, str]] = set()

    @classmethod
    async def start(
        cls,
        plane: ControlPlane,
        client: AsyncClient,
        config: FleetConfig,
        kured_namespace: str = SYSTEM_NAMESPACE,
    ) -> Fleet:
        """Start the fleet's supervisor and return once every node is Ready."""
        start_supervisor(plane.state, config)
        fleet = cls(plane, client, config, kured_namespace)
        try:
            await fleet.wait_ready()
        except BaseException:
            stop_supervisor(plane.state, config.name)
            raise
        return fleet

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def nodes(self) -> list[str]:
        return self.config.node_names()

    @property
    def state(self) -> SandboxState:
        return self.plane.state

    def host(self, node: str) -> SimulatedHost:
        return host(self.state, node)

    async def wait_ready(self) -> float:
        return await wait_ready(self.client, self.state, self.config)

    async def workload(self, **options: Any) -> str:
        """`kured-sandbox workload`; returns its namespace (deleted by stop())."""
        namespace = await deploy_workload(self.client, self.config, **options)
        self.namespaces.add(namespace)
        return namespace

    async def run_kured(
        self,
        args: list[str],
        *,
        manifests: Sequence[Path] | None = None,
        as_serviceaccount: bool = False,
        raw: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        """`kured-sandbox run-kured` into this fleet's kured namespace."""
        if self.kured_namespace != SYSTEM_NAMESPACE:
            self.namespaces.add(self.kured_namespace)
        self.cluster_objects |= set(
            await run_kured(
                self.plane,
                self.client,
                self.name,
                args,
                namespace=self.kured_namespace,
                manifests=manifests,
                as_serviceaccount=as_serviceaccount,
                raw=raw,
                env=env,
            )
        )

    async def stop_kured(self) -> None:
        await stop_kured(self.plane, self.name)

    def trigger(self, *nodes: str) -> None:
        trigger(self.state, list(nodes) or self.nodes)

    def kill(self, node: str, sig: int = signal.SIGKILL) -> int:
        return kill_daemon(self.state, node, sig)

    def daemon_pid(self, node: str) -> int | None:
        return daemon_pid(self.state, node)

    def reboots(self, node: str) -> list[dict[str, Any]]:
        return reboots(self.state, node)

    async def status(self) -> list[dict[str, Any]]:
        known = await _nodes_by_name(self.client, [self.name])
        return [node_row(self.state, self.name, name, known.get(name)) for name in self.nodes]

    async def stop(self, *, delete: bool = True) -> None:
        """Stop the supervisor and its daemons; with delete, also remove the fleet's Nodes
        and the namespaces it created."""
        await asyncio.to_thread(stop_supervisor, self.state, self.name)
        if not delete:
            return
        await delete_nodes(self.client, self.nodes)
        doomed: list[tuple[type[GlobalResource], str]] = [
            (Namespace, name) for name in self.namespaces
        ]
        doomed += [(CLUSTER_KINDS[kind], name) for kind, name in self.cluster_objects]
        for kind, name in doomed:
            try:
                await self.client.delete(kind, name)
            except ApiError as error:
                if error.status.code != _NOT_FOUND:
                    raise


async def wait_until(
    check: Callable[[], Awaitable[T | None]],
    *,
    what: str,
    within: float = 30.0,
    interval: float = 0.1,
) -> T:
    """Poll check until it returns something truthy, and return that; TimeoutError (naming
    what was awaited) after `within` seconds."""
    deadline = time.monotonic() + within
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {within:g} s (last: {result!r})")
        await asyncio.sleep(interval)
    return result
