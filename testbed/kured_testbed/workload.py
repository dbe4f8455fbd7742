"""`kured-sandbox workload`: something for kured to drain. In a namespace of its own, on one
fleet's nodes only: Deployments guarded by PDBs (one maxUnavailable, one minAvailable), a
Deployment whose pod uses emptyDir, and an unmanaged pod. Every pod takes
kured-sandbox/stop-seconds to stop (the simulated kubelet honours it).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from lightkube import AsyncClient, codecs
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod

from kured_testbed import kinds  # noqa: F401 (registers policy/v1beta1 PodDisruptionBudget)
from kured_testbed.fleet import FleetConfig
from kured_testbed.state import FLEET_LABEL, STOP_SECONDS_ANNOTATION, SandboxError

IMAGE = "registry.k8s.io/pause:3.2"  # never pulled: no kubelet runs it
STANDALONE_POD = "standalone"


def default_namespace(fleet: str) -> str:
    return f"{fleet}-workload"


def _pod_spec(fleet: str, volumes: list[dict[str, Any]], image: str) -> dict[str, Any]:
    mounts = [{"name": volume["name"], "mountPath": f"/{volume['name']}"} for volume in volumes]
    return {
        "nodeSelector": {FLEET_LABEL: fleet},
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
        "containers": [{"name": "app", "image": image, "volumeMounts": mounts}],
        "volumes": volumes,
    }


def _pod_template(
    app: str, fleet: str, stop_seconds: float, volumes: list[dict[str, Any]], image: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": {"app": app},
            "annotations": {STOP_SECONDS_ANNOTATION: f"{stop_seconds:g}"},
        },
        "spec": _pod_spec(fleet, volumes, image),
    }


def _deployment(
    name: str, namespace: str, replicas: int, template: dict[str, Any]
) -> dict[str, Any]:
    spread = {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": name}},
    }
    template["spec"]["topologySpreadConstraints"] = [spread]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template,
        },
    }


def _pdb(name: str, namespace: str, budget: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1beta1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": name}}, **budget},
    }


def workload_objects(
    fleet: FleetConfig,
    namespace: str,
    replicas: int | None,
    stop_seconds: float,
    image: str = IMAGE,
) -> list[dict[str, Any]]:
    """The workload's objects as manifests (namespace first); real nodes (the lab) run an
    image they have instead of the simulated kubelet's placeholder."""
    web = replicas if replicas is not None else max(2, fleet.nodes)
    scratch = [{"name": "scratch", "emptyDir": {}}]
    standalone = _pod_template(STANDALONE_POD, fleet.name, stop_seconds, [], image)
    standalone["metadata"]["name"] = STANDALONE_POD
    standalone["metadata"]["namespace"] = namespace
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        _deployment(
            "web", namespace, web, _pod_template("web", fleet.name, stop_seconds, [], image)
        ),
        _pdb("web", namespace, {"maxUnavailable": 1}),
        _deployment("db", namespace, 2, _pod_template("db", fleet.name, stop_seconds, [], image)),
        _pdb("db", namespace, {"minAvailable": 1}),
        _deployment(
            "cache", namespace, 1, _pod_template("cache", fleet.name, stop_seconds, scratch, image)
        ),
        {"apiVersion": "v1", "kind": "Pod", **standalone},
    ]


async def deploy_workload(
    client: AsyncClient,
    fleet: FleetConfig,
    *,
    namespace: str | None = None,
    replicas: int | None = None,
    stop_seconds: float = 1.0,
    within: float = 60.0,
    image: str = IMAGE,
) -> str:
    """Apply the workload and wait until all its pods are Ready; returns the namespace."""
    namespace = namespace or default_namespace(fleet.name)
    for manifest in workload_objects(fleet, namespace, replicas, stop_seconds, image):
        await client.apply(codecs.from_dict(manifest), force=True)
    await _wait_available(client, namespace, time.monotonic() + within)
    return namespace


async def _wait_available(client: AsyncClient, namespace: str, deadline: float) -> None:
    while True:
        deployments = [d async for d in client.list(Deployment, namespace=namespace)]
        pod = await client.get(Pod, STANDALONE_POD, namespace=namespace)
        pending = [
            d.metadata.name if d.metadata else ""
            for d in deployments
            if _ready_replicas(d) < ((d.spec.replicas if d.spec else None) or 0)
        ]
        ready = pod.status is not None and any(
            c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
        )
        if not pending and ready:
            return
        if time.monotonic() > deadline:
            raise SandboxError(f"workload in {namespace} not ready in time (waiting for {pending})")
        await asyncio.sleep(0.25)


def _ready_replicas(deployment: Deployment) -> int:
    return (deployment.status.readyReplicas if deployment.status else None) or 0
