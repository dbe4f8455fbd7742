"""The kubelet we don't have: registers a fleet's Nodes, keeps them Ready with Lease heartbeats,
runs the pods bound to them, finishes their graceful deletions, and takes a node down and
back up for a simulated reboot.

Many nodes per process (benchmarks run hundreds): one asyncio task per node for heartbeats and
one shared watch of all bound pods, never a poll per node.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.core.client import FieldSelector
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.operators import not_equal
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, NodeStatus, Pod, PodStatus
from lightkube.types import PatchType

from kured_testbed.fleet import FleetConfig
from kured_testbed.state import FLEET_LABEL, STOP_SECONDS_ANNOTATION

log = logging.getLogger("kured_testbed.nodesim")

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10.0
# The node lifecycle controller trusts the Lease; the full status is re-posted this often.
STATUS_EVERY_HEARTBEATS = 6
_CAPACITY = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
_NOT_FOUND = 404
_CONFLICT = 409


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _ignore_missing(call: Awaitable[object]) -> None:
    """Run an API call on an object that may have been deleted meanwhile."""
    try:
        await call
    except ApiError as error:
        if error.status.code != _NOT_FOUND:
            raise


async def _persist(what: str, call: Callable[[], Awaitable[object]]) -> None:
    """Retry a write that a node's story depends on (NotReady before its pods stop, Ready
    after the reboot, a pod's Running or final deletion) until the API server takes it: a
    pod left not Ready by one failed write holds its PodDisruptionBudget, and every drain,
    forever (a real kubelet keeps syncing)."""
    while True:
        try:
            await call()
        except Exception as error:
            log.warning("%s failed, retrying: %s", what, error)
            await asyncio.sleep(1.0)
        else:
            return


@dataclass
class SimNode:
    name: str
    zone: str
    boot_id: str
    up: bool = True
    registered: str = field(default_factory=_now)
    ready_since: str = field(default_factory=_now)
    uid: str = ""


@dataclass
class SimPod:
    """What the simulated kubelet knows of one pod bound to one of its nodes."""

    uid: str
    namespace: str
    name: str
    node: str
    containers: list[tuple[str, str]]
    init_containers: list[tuple[str, str]]
    restarts: int = 0
    running: bool = False
    deleting: bool = False
    deletion_at: float = 0.0
    stop_seconds: float = 0.0
    pending: str = ""
    task: asyncio.Task[None] | None = None

    @classmethod
    def observe(cls, pod: Pod) -> SimPod:
        spec, meta = pod.spec, pod.metadata
        assert spec is not None and meta is not None
        statuses = (pod.status.containerStatuses if pod.status else None) or []
        return cls(
            uid=str(meta.uid),
            namespace=str(meta.namespace),
            name=str(meta.name),
            node=str(spec.nodeName),
            containers=[(c.name, str(c.image)) for c in spec.containers],
            init_containers=[(c.name, str(c.image)) for c in spec.initContainers or []],
            restarts=max((s.restartCount for s in statuses), default=0),
            running=_reported_running(pod),
        )

    def update(self, pod: Pod) -> None:
        meta = pod.metadata
        assert meta is not None
        if meta.deletionTimestamp is not None:
            self.deleting = True
            self.deletion_at = meta.deletionTimestamp.timestamp()
            annotation = (meta.annotations or {}).get(STOP_SECONDS_ANNOTATION, "0")
            try:
                self.stop_seconds = max(0.0, float(annotation))
            except ValueError:
                self.stop_seconds = 0.0


def _reported_running(pod: Pod) -> bool:
    """Running and Ready already (reported by an earlier supervisor of this fleet)."""
    status = pod.status
    if status is None or status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def _container_status(
    name: str, image: str, uid: str, restarts: int, started: str
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imageID": f"sandbox://{image}",
        "containerID": f"sandbox://{uid}/{name}/{restarts}",
        "ready": True,
        "started": True,
        "restartCount": restarts,
        "state": {"running": {"startedAt": started}},
    }


def _init_status(name: str, image: str, uid: str, started: str) -> dict[str, Any]:
    terminated = {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": started}
    return {
        "name": name,
        "image": image,
        "imageID": f"sandbox://{image}",
        "containerID": f"sandbox://{uid}/{name}/0",
        "ready": True,
        "restartCount": 0,
        "state": {"terminated": terminated},
    }


def _conditions(status: str, now: str, types: Iterable[str]) -> list[dict[str, Any]]:
    return [{"type": kind, "status": status, "lastTransitionTime": now} for kind in types]


def running_status(pod: SimPod) -> dict[str, Any]:
    """The pod status a kubelet posts once every container runs and is ready."""
    now = _now()
    return {
        "status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "startTime": now,
            "conditions": _conditions(
                "True", now, ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ),
            "containerStatuses": [
                _container_status(name, image, pod.uid, pod.restarts, now)
                for name, image in pod.containers
            ],
            "initContainerStatuses": [
                _init_status(name, image, pod.uid, now) for name, image in pod.init_containers
            ],
        }
    }


def not_ready_status() -> dict[str, Any]:
    """What the node lifecycle controller posts for pods of a node that went away."""
    return {"status": {"conditions": _conditions("False", _now(), ("Ready", "ContainersReady"))}}


class Kubelet:
    """The simulated kubelets of one fleet."""

    def __init__(
        self,
        client: AsyncClient,
        config: FleetConfig,
        boot_ids: dict[str, str],
        kubelet_version: str,
    ) -> None:
        self.client = client
        self.config = config
        self.kubelet_version = kubelet_version
        self.nodes = {
            name: SimNode(name, config.zone(name), boot_ids[name]) for name in config.node_names()
        }
        self.pods: dict[str, SimPod] = {}

    # --- nodes -----------------------------------------------------------------------------

    async def register(self) -> None:
        """Create (or adopt) every Node with its Ready status and Lease."""
        limit = asyncio.Semaphore(32)

        async def one(node: SimNode) -> None:
            async with limit:
                await self._register(node)

        await asyncio.gather(*(one(node) for node in self.nodes.values()))

    async def _register(self, node: SimNode) -> None:
        labels = {
            "kubernetes.io/hostname": node.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": node.zone,
            "topology.kubernetes.io/region": "sandbox",
            FLEET_LABEL: self.config.name,
        }
        body = Node(metadata=ObjectMeta(name=node.name, labels=labels))
        try:
            created = await self.client.create(body)
        except ApiError as error:
            if error.status.code != _CONFLICT:
                raise
            created = await self.client.patch(Node, node.name, {"metadata": {"labels": labels}})
        assert created.metadata is not None
        node.uid = str(created.metadata.uid)
        await self.post_status(node)
        await self.renew_lease(node)

    def _node_status(self, node: SimNode) -> dict[str, Any]:
        now = _now()
        ready = "True" if node.up else "False"
        reason, message = (
            ("KubeletReady", "kubelet is posting ready status")
            if node.up
            else ("KubeletNotReady", "simulated reboot in progress")
        )
        pressure = [
            {
                "type": kind,
                "status": "False",
                "reason": f"KubeletHas{suffix}",
                "lastHeartbeatTime": now,
                "lastTransitionTime": node.registered,
            }
            for kind, suffix in (
                ("MemoryPressure", "SufficientMemory"),
                ("DiskPressure", "NoDiskPressure"),
                ("PIDPressure", "SufficientPID"),
            )
        ]
        ready_condition = {
            "type": "Ready",
            "status": ready,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": node.ready_since,
        }
        return {
            "status": {
                "capacity": _CAPACITY,
                "allocatable": _CAPACITY,
                "conditions": [*pressure, ready_condition],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": node.name},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "machineID": node.uid.replace("-", ""),
                    "systemUUID": node.uid,
                    "bootID": node.boot_id,
                    "kernelVersion": platform.release(),
                    "osImage": "kured-sandbox",
                    "containerRuntimeVersion": "sandbox://1",
                    "kubeletVersion": self.kubelet_version,
                    "kubeProxyVersion": self.kubelet_version,
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            }
        }

    async def post_status(self, node: SimNode) -> None:
        await self.client.patch(NodeStatus, node.name, self._node_status(node))

    async def renew_lease(self, node: SimNode) -> None:
        spec = LeaseSpec(holderIdentity=node.name, renewTime=datetime.now(UTC))
        try:
            await self.client.patch(
                Lease,
                node.name,
                {"spec": spec.to_dict()},
                namespace=LEASE_NAMESPACE,
                patch_type=PatchType.MERGE,
            )
        except ApiError as error:
            if error.status.code != _NOT_FOUND:
                raise
            # Owned by the Node, so the garbage collector deletes it with the Node.
            owner = OwnerReference(apiVersion="v1", kind="Node", name=node.name, uid=node.uid)
            spec.leaseDurationSeconds = LEASE_SECONDS
            meta = ObjectMeta(name=node.name, namespace=LEASE_NAMESPACE, ownerReferences=[owner])
            await self.client.create(Lease(metadata=meta, spec=spec))

    async def heartbeat(self, node: SimNode) -> None:
        """Renew the node's Lease every 10 s while it is up (and its status now and then),
        as a kubelet does; the first beat is spread out so nodes do not beat in step."""
        await asyncio.sleep(random.uniform(0, HEARTBEAT_SECONDS))
        beats = 0
        while True:
            if node.up:
                try:
                    await self.renew_lease(node)
                    if beats % STATUS_EVERY_HEARTBEATS == 0:
                        await self.post_status(node)
                except Exception as error:  # a missed beat is what a real kubelet tolerates too
                    log.warning("%s: heartbeat failed: %s", node.name, error)
                beats += 1
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def go_down(self, name: str) -> None:
        """The node stops: NotReady at once (not after the 40 s grace), its pods not ready."""
        node = self.nodes[name]
        node.up = False
        node.ready_since = _now()
        await _persist(f"{name}: post NotReady", lambda: self.post_status(node))
        pods = [pod for pod in self.pods.values() if pod.node == name]
        for pod in pods:
            self._cancel(pod)
        stops = [self._run(pod, self._stop) for pod in pods if pod.running]
        await asyncio.gather(*stops)

    async def come_up(self, name: str, boot_id: str) -> None:
        """The node is back with a new boot id; its pods start again (or finish deleting)."""
        node = self.nodes[name]
        node.boot_id = boot_id
        node.up = True
        node.ready_since = _now()
        await _persist(f"{name}: post Ready", lambda: self.post_status(node))
        await _persist(f"{name}: renew lease", lambda: self.renew_lease(node))
        for pod in list(self.pods.values()):
            if pod.node == name:
                self._act(pod)

    # --- pods ------------------------------------------------------------------------------

    async def watch_pods(self) -> None:
        """List, then watch, every bound pod; relist after any watch failure."""
        bound: FieldSelector = {"spec.nodeName": not_equal("")}
        while True:
            try:
                listing = self.client.list(Pod, namespace="*", fields=bound)
                current = [pod async for pod in listing]
                self._resync(current)
                events = self.client.watch(
                    Pod, namespace="*", fields=bound, resource_version=listing.resourceVersion
                )
                async for kind, pod in events:
                    self._observe(kind, pod)
            except Exception as error:
                log.warning("pod watch failed, relisting: %s", error)
                await asyncio.sleep(1.0)

    def _resync(self, pods: list[Pod]) -> None:
        uids = {str(pod.metadata.uid) for pod in pods if pod.metadata}
        for uid in set(self.pods) - uids:
            self._cancel(self.pods.pop(uid))
        for pod in pods:
            self._observe("ADDED", pod)

    def _observe(self, kind: str, pod: Pod) -> None:
        assert pod.metadata is not None and pod.spec is not None
        uid = str(pod.metadata.uid)
        if kind == "DELETED" or pod.spec.nodeName not in self.nodes:
            if known := self.pods.pop(uid, None):
                self._cancel(known)
            return
        if (pod.status.phase if pod.status else None) in ("Succeeded", "Failed"):
            return
        sim = self.pods.get(uid)
        if sim is None:
            sim = self.pods[uid] = SimPod.observe(pod)
        sim.update(pod)
        self._act(sim)

    def _act(self, pod: SimPod) -> None:
        """Start the one thing this pod needs next (if its node is up)."""
        if not self.nodes[pod.node].up:
            return
        action: Callable[[SimPod], Awaitable[None]] | None
        if pod.deleting:
            action = self._finish_deletion
        elif not pod.running:
            action = self._start
        else:
            action = None
        if action is None or pod.pending == action.__name__:
            return
        self._cancel(pod)
        pod.pending = action.__name__
        pod.task = asyncio.create_task(self._run(pod, action))

    async def _run(self, pod: SimPod, action: Callable[[SimPod], Awaitable[None]]) -> None:
        try:
            await action(pod)
        except ApiError as error:
            if error.status.code != _NOT_FOUND:
                log.warning("pod %s/%s: %s", pod.namespace, pod.name, error)
        except Exception as error:
            log.warning("pod %s/%s: %s", pod.namespace, pod.name, error)
        finally:
            if pod.task is asyncio.current_task():
                pod.pending = ""
                pod.task = None

    @staticmethod
    def _cancel(pod: SimPod) -> None:
        if pod.task is not None:
            pod.task.cancel()
        pod.pending = ""
        pod.task = None

    async def _start(self, pod: SimPod) -> None:
        await asyncio.sleep(self.config.pod_start_seconds)
        await _persist(
            f"pod {pod.namespace}/{pod.name}: post Running",
            lambda: _ignore_missing(
                self.client.patch(PodStatus, pod.name, running_status(pod), namespace=pod.namespace)
            ),
        )
        pod.running = True

    async def _stop(self, pod: SimPod) -> None:
        """The node went down under a running pod: it restarts when the node is back."""
        pod.running = False
        pod.restarts += 1
        await _persist(
            f"pod {pod.namespace}/{pod.name}: post not ready",
            lambda: _ignore_missing(
                self.client.patch(PodStatus, pod.name, not_ready_status(), namespace=pod.namespace)
            ),
        )

    async def _finish_deletion(self, pod: SimPod) -> None:
        """The containers stop after min(stop-seconds, what is left of the grace period);
        then the kubelet deletes the pod for good."""
        if pod.running:
            left = max(0.0, pod.deletion_at - time.time())
            await asyncio.sleep(min(pod.stop_seconds, left))
        await _persist(
            f"pod {pod.namespace}/{pod.name}: delete",
            lambda: _ignore_missing(
                self.client.delete(Pod, pod.name, namespace=pod.namespace, grace_period=0)
            ),
        )

    async def run(self) -> None:
        """Heartbeats of every node and the pod watch, until cancelled."""
        async with asyncio.TaskGroup() as group:
            for node in self.nodes.values():
                group.create_task(self.heartbeat(node))
            group.create_task(self.watch_pods())

    def close(self) -> None:
        for pod in self.pods.values():
            self._cancel(pod)
