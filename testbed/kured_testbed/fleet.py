"""Fleets: groups of simulated nodes, each run by one background supervisor process.

One control plane hosts several fleets (the e2e tests start one per test). A fleet named F has
nodes F-1 … F-N, all labelled kured-sandbox/fleet=F, spread round-robin over zones zone-a,
zone-b, …; its supervisor (`kured-sandbox _supervise`) plays their kubelets and owns their
kured processes.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Node

from kured_testbed import procs
from kured_testbed.state import (
    FLEET_LABEL,
    SandboxError,
    SandboxState,
    UsageError,
    atomic_write,
    read_json,
)

# A fleet name becomes part of node names and label values: a DNS label, short.
_FLEET_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,28}[a-z0-9])?$")
_UNSCHEDULABLE_TAINTS = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}


@dataclass(frozen=True)
class FleetConfig:
    """A fleet's parameters, saved in STATE/fleets/<name>/fleet.json for its supervisor."""

    name: str
    nodes: int
    zones: int = 3
    reboot_seconds: float = 5.0
    pod_start_seconds: float = 0.5

    def __post_init__(self) -> None:
        if not _FLEET_NAME.match(self.name):
            raise UsageError(f"invalid fleet name {self.name!r} (lowercase letters, digits, -)")
        if not 1 <= self.nodes <= 1000:
            raise UsageError(f"--nodes must be between 1 and 1000, not {self.nodes}")
        if not 1 <= self.zones <= len(string.ascii_lowercase):
            raise UsageError(f"--zones must be between 1 and 26, not {self.zones}")
        if self.reboot_seconds < 0 or self.pod_start_seconds < 0:
            raise UsageError("durations must not be negative")

    def node_names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(1, self.nodes + 1)]

    def zone(self, node: str) -> str:
        index = int(node.rsplit("-", 1)[1]) - 1
        return f"zone-{string.ascii_lowercase[index % self.zones]}"

    def save(self, state: SandboxState) -> None:
        atomic_write(state.fleet(self.name).config, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, state: SandboxState, name: str) -> FleetConfig:
        data = read_json(state.fleet(name).config)
        if data is None:
            raise UsageError(f"no fleet {name!r} in {state.root}")
        return cls(**data)


def supervisor_pid_file(state: SandboxState, fleet: str) -> Path:
    return state.pid_file(f"supervisor-{fleet}")


def start_supervisor(state: SandboxState, config: FleetConfig) -> None:
    """Save the fleet's config and start its supervisor in the background."""
    if procs.running_pid(supervisor_pid_file(state, config.name)) is not None:
        raise SandboxError(f"fleet {config.name!r} is already running in {state.root}")
    config.save(state)
    argv = [sys.executable, "-m", "kured_testbed", "_supervise"]
    argv += ["--state-dir", str(state.root), "--fleet", config.name]
    procs.spawn(
        argv,
        log=state.log_file(f"supervisor-{config.name}"),
        pid_file=supervisor_pid_file(state, config.name),
    )


def stop_supervisor(state: SandboxState, fleet: str) -> None:
    """Stop the supervisor (which stops its daemons), then anything a killed one left behind."""
    procs.stop_pid_files([supervisor_pid_file(state, fleet)], timeout=10.0)
    config = FleetConfig.load(state, fleet)
    nodes = [state.node(name) for name in config.node_names()]
    procs.stop_pid_files(path for node in nodes for path in (node.kured_pid, node.init_pid))


def node_ready(node: Node) -> bool:
    """Ready and without the taints the node lifecycle controller keeps while it is not:
    only then will the scheduler place pods there."""
    conditions = (node.status.conditions if node.status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    taints = (node.spec.taints if node.spec else None) or []
    return ready and not any(t.key in _UNSCHEDULABLE_TAINTS for t in taints)


async def fleet_nodes(client: AsyncClient, fleet: str) -> list[Node]:
    return [node async for node in client.list(Node, labels={FLEET_LABEL: fleet})]


async def wait_ready(
    client: AsyncClient, state: SandboxState, config: FleetConfig, within: float = 120.0
) -> float:
    """Wait until every node of the fleet is Ready and schedulable; returns the seconds it took.
    Fails at once if the supervisor dies."""
    started = time.monotonic()
    pid_file = supervisor_pid_file(state, config.name)
    while True:
        if procs.running_pid(pid_file) is None:
            log = state.log_file(f"supervisor-{config.name}")
            raise SandboxError(f"the supervisor of fleet {config.name!r} exited (log: {log})")
        nodes = await fleet_nodes(client, config.name)
        if sum(node_ready(node) for node in nodes) == config.nodes:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise SandboxError(f"fleet {config.name!r}: nodes not Ready within {within:.0f} s")
        await asyncio.sleep(0.25)


async def delete_nodes(client: AsyncClient, names: Iterable[str]) -> None:
    """Delete Node objects (their Leases go with them: the node owns its Lease)."""

    async def delete(name: str) -> None:
        try:
            await client.delete(Node, name)
        except ApiError as error:
            if error.status.code != 404:
                raise

    await asyncio.gather(*(delete(name) for name in names))
