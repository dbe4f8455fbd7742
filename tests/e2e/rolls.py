"""Watching a roll from the outside: what the cluster says, independent of kured's own view.

A :class:`NodeWatch` follows the fleet's Nodes through a watch (events arrive in the API
server's order) and keeps the largest number of nodes that were cordoned at the same time,
and which nodes were ever cordoned. :func:`wait_rolled` waits until every node rebooted and
kured let go of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from lightkube import AsyncClient
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, Pod

from kured.lease import LOCK_LABEL
from kured.lockformat import parse
from kured.policy import PROGRESS_ANNOTATION
from kured_testbed.api import Fleet, wait_until
from kured_testbed.state import FLEET_LABEL

LOCK_ANNOTATION = "weave.works/kured-node-lock"
ZONE_LABEL = "topology.kubernetes.io/zone"


@dataclass
class NodeWatch:
    """The most nodes of a fleet that were unschedulable at once, as the server saw it."""

    ignore: set[str] = field(default_factory=set)  # nodes cordoned by someone else
    cordoned: set[str] = field(default_factory=set)
    ever_cordoned: set[str] = field(default_factory=set)
    most_at_once: int = 0
    zones: dict[str, str] = field(default_factory=dict)
    most_per_zone: int = 0

    def see(self, node: Node) -> None:
        meta = node.metadata
        name = str(meta.name if meta else "")
        self.zones[name] = ((meta.labels if meta else None) or {}).get(ZONE_LABEL, "")
        if name in self.ignore:
            return
        if node.spec and node.spec.unschedulable:
            self.cordoned.add(name)
            self.ever_cordoned.add(name)
        else:
            self.cordoned.discard(name)
        self.most_at_once = max(self.most_at_once, len(self.cordoned))
        per_zone = Counter(self.zones[n] for n in self.cordoned)
        self.most_per_zone = max(self.most_per_zone, *per_zone.values(), 0)


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``work`` (a watch loop) while the block runs, and cancel it afterwards."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def watching(
    client: AsyncClient, fleet: Fleet, ignore: set[str] | None = None
) -> AsyncIterator[NodeWatch]:
    seen = NodeWatch(ignore=ignore or set())

    async def follow() -> None:
        async for _event, node in client.watch(Node, labels={FLEET_LABEL: fleet.name}):
            seen.see(node)

    async with in_background(follow()):
        yield seen


# Daemons whose hosts ignore the reboot (SIGCHLD to the init stand-in), so a node that
# commanded its reboot keeps its slot; and a period long enough not to wake them meanwhile.
HOSTS_STAY_UP = ["--period=1m", "--reboot-method=signal", f"--reboot-signal={signal.SIGCHLD}"]


async def lock_holders(client: AsyncClient, fleet: Fleet) -> list[str]:
    """Holders on either backend: the DaemonSet annotation, and the lock Leases."""
    ds = await client.get(DaemonSet, "kured", namespace=fleet.kured_namespace)
    annotations = (ds.metadata.annotations if ds.metadata else None) or {}
    leases = client.list(Lease, namespace=fleet.kured_namespace, labels={LOCK_LABEL: "kured"})
    leased = [lease.spec.holderIdentity async for lease in leases if lease.spec]
    return parse(annotations.get(LOCK_ANNOTATION)).holders() + [h for h in leased if h]


async def node_annotations(client: AsyncClient, name: str) -> dict[str, str]:
    node = await client.get(Node, name)
    return dict((node.metadata.annotations if node.metadata else None) or {})


async def wait_rolled(
    client: AsyncClient,
    fleet: Fleet,
    nodes: list[str] | None = None,
    *,
    within: float = 120.0,
    keep_cordoned: frozenset[str] = frozenset(),
) -> None:
    """Every node rebooted at least once, is back schedulable (unless it was cordoned before
    kured came), has no progress record left, and nobody holds the lock."""
    targets = nodes or fleet.nodes

    async def done() -> bool:
        for name in targets:
            node = await client.get(Node, name)
            cordoned = bool(node.spec and node.spec.unschedulable)
            annotations = (node.metadata.annotations if node.metadata else None) or {}
            if not fleet.reboots(name) or cordoned != (name in keep_cordoned):
                return False
            if PROGRESS_ANNOTATION in annotations:
                return False
        return not await lock_holders(client, fleet)

    await wait_until(done, what=f"roll of {targets}", within=within, interval=0.5)


def kured_log(fleet: Fleet, node: str) -> str:
    return fleet.state.node(node).kured_log.read_text()


def status_of(annotations: dict[str, str]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(annotations.get("kured.dev/status", "{}"))
    return value


async def precious_pod(kube: AsyncClient, fleet: Fleet, node: str) -> None:
    """A pod labelled role=precious bound to ``node`` (for --blocking-pod-selector)."""
    namespace = await fleet.workload()
    pod = Pod.from_dict(
        {
            "metadata": {
                "name": "precious",
                "namespace": namespace,
                "labels": {"role": "precious"},
            },
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.2"}],
            },
        }
    )
    await kube.create(cast(Pod, pod))


def on_leases(lock_backend: str) -> bool:
    """Whether the ``lock_backend`` fixture's flag is the Lease backend's."""
    return lock_backend == "--lock-backend=lease"


LOCK_KINDS = ("daemonsets", "leases")  # where either backend keeps its lock
WRITES = ("create", "update", "patch", "delete")


def lock_writes(events: list[dict[str, Any]], fleet: Fleet) -> list[str]:
    """The writes kured's daemons made, as the audit log saw them, to the objects either
    lock backend keeps its lock in (the DaemonSet, the Leases of its namespace)."""
    account = f"system:serviceaccount:{fleet.kured_namespace}:kured"
    found = []
    for event in events:
        ref = event.get("objectRef") or {}
        if (
            event.get("user", {}).get("username") == account
            and event.get("verb") in WRITES
            and ref.get("resource") in LOCK_KINDS
            and ref.get("namespace") == fleet.kured_namespace
        ):
            found.append(f"{event['verb']} {ref['resource']}/{ref.get('name')}")
    return found
