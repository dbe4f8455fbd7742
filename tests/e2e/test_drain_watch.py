"""The drain waits on watches, not on its clocks: a refused eviction is retried as soon as its
PodDisruptionBudget has room, and evicted pods are seen going as they go. With Go kured's
RBAC (no watch) it falls back to the back-off and to polling, and says so once; and
--skip-wait-for-delete-timeout still ends the wait for a pod on time while it is watched.

The drainer runs in the test's process, as a ServiceAccount with the RBAC under test, against
the sandbox's real API server; its clocks are set long enough that a drain that waited on
them could not finish within the assertions' bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from lightkube import AsyncClient, codecs
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from kured import drain
from kured.drain import Drainer, DrainOptions
from kured.kube import Kube, load_config
from kured_testbed.api import Fleet, FleetFactory, default_manifests, wait_until
from kured_testbed.controlplane import ControlPlane
from kured_testbed.kinds import PodDisruptionBudget
from kured_testbed.manifests import apply_manifests, load_manifests, service_account_kubeconfig

pytestmark = pytest.mark.e2e

LONG = 30.0  # seconds: a clock the drain must not be waiting on
DISRUPTED_POD_TIMEOUT = 120  # s: the disruption controller's expiry of a disruptedPods entry
OPTIONS = DrainOptions(
    grace_period=None, pod_selector="", timeout=None, skip_wait_for_delete_after=None
)
# Go kured 1.23's ClusterRole: no watch of anything.
GO_KURED_RBAC: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kured"}},
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "kured"},
        "rules": [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "get", "delete"]},
            {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "kured"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "kured",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "kured", "namespace": "kube-system"}],
    },
]


async def as_kured(
    kube: AsyncClient, plane: ControlPlane, fleet: Fleet, rbac: list[dict[str, Any]]
) -> Path:
    """A kubeconfig of kured's ServiceAccount with the given RBAC, in the fleet's namespace."""
    namespace = fleet.kured_namespace
    fleet.namespaces.add(namespace)
    fleet.cluster_objects |= set(await apply_manifests(kube, rbac, namespace, fleet.name))
    return await service_account_kubeconfig(kube, plane, namespace, "kured")


def repo_rbac() -> list[dict[str, Any]]:
    return [m for m in load_manifests(default_manifests()) if m["kind"] != "DaemonSet"]


async def web_budget(kube: AsyncClient, namespace: str, max_unavailable: int) -> None:
    pdb = {
        "apiVersion": "policy/v1beta1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "maxUnavailable": max_unavailable},
    }
    await kube.apply(codecs.from_dict(pdb), field_manager="test", force=True)


async def pods_on(kube: AsyncClient, node: str) -> list[str]:
    pods = kube.list(Pod, namespace="*", fields={"spec.nodeName": node})
    return [p.metadata.name async for p in pods if p.metadata and p.metadata.name]


@pytest.fixture
def slow_clocks(monkeypatch: pytest.MonkeyPatch) -> None:
    for clock in (
        "EVICTION_RETRY_FIRST_SECONDS",
        "EVICTION_RETRY_MAX_SECONDS",
        "DELETION_POLL_SECONDS",
        "DELETION_RELIST_SECONDS",
    ):
        monkeypatch.setattr(drain, clock, LONG)


@contextlib.asynccontextmanager
async def draining(config: Path, node: str) -> AsyncIterator[asyncio.Task[None]]:
    """A drain of ``node`` by kured's Drainer as the kubeconfig's user, running meanwhile."""
    async with Kube(load_config(str(config))) as kube:
        task = asyncio.create_task(Drainer(kube, OPTIONS).drain(node))
        try:
            yield task
        finally:
            task.cancel()


async def refused(caplog: pytest.LogCaptureFixture, what: str) -> bool:
    return any("Error when evicting pod" in r.message and what in r.message for r in caplog.records)


@dataclasses.dataclass(frozen=True)
class BlockedDrain:
    namespace: str
    node: str
    pods_before: list[str]
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def blocked_drain(
    fleet: FleetFactory,
    kube: AsyncClient,
    control_plane: ControlPlane,
    caplog: pytest.LogCaptureFixture,
    rbac: list[dict[str, Any]],
) -> AsyncIterator[BlockedDrain]:
    """A drain, as kured with ``rbac``, of a one-node fleet whose web budget allows no
    disruption, from the moment web's eviction was refused."""
    caplog.set_level(logging.INFO, logger="kured.drain")
    started = await fleet(1)
    namespace = await started.workload(stop_seconds=0.5)
    await web_budget(kube, namespace, 0)
    config = await as_kured(kube, control_plane, started, rbac)
    node = started.nodes[0]
    before = await pods_on(kube, node)
    async with draining(config, node) as drained:
        await wait_until(lambda: refused(caplog, "/web-"), what="web's eviction refused", within=30)
        yield BlockedDrain(namespace, node, before, drained)


@pytest.mark.usefixtures("slow_clocks")
async def test_a_refused_eviction_goes_once_its_budget_has_room(
    fleet: FleetFactory,
    kube: AsyncClient,
    control_plane: ControlPlane,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with blocked_drain(fleet, kube, control_plane, caplog, repo_rbac()) as blocked:
        await asyncio.sleep(1.0)  # the drain is now waiting, its back-off 30 s away
        opened = time.monotonic()
        await web_budget(kube, blocked.namespace, 1)
        await asyncio.wait_for(blocked.task, LONG)
        took = time.monotonic() - opened
    # Two web pods, one disruption at a time: each goes once a replacement is Ready, and
    # the drain ends when the last has stopped (0.5 s), not at a 30 s clock.
    assert took < 10, f"drain ended {took:.1f} s after the budget had room"
    assert not set(blocked.pods_before) & set(await pods_on(kube, blocked.node))


@pytest.mark.usefixtures("slow_clocks")
async def test_evicted_pods_are_seen_going_at_once(
    fleet: FleetFactory, kube: AsyncClient, control_plane: ControlPlane
) -> None:
    started = await fleet(2)
    await started.workload(stop_seconds=0.5)
    config = await as_kured(kube, control_plane, started, repo_rbac())
    node = started.nodes[0]
    began = time.monotonic()
    async with draining(config, node) as drained:
        await asyncio.wait_for(drained, LONG)
    # Pods stop in 0.5 s, a budget's room comes back within a second or two: far below
    # the 30 s between two lists of the node's pods.
    assert time.monotonic() - began < 10


async def test_without_watch_rights_the_drain_falls_back_to_its_clocks(
    fleet: FleetFactory,
    kube: AsyncClient,
    control_plane: ControlPlane,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with blocked_drain(fleet, kube, control_plane, caplog, GO_KURED_RBAC) as blocked:
        await web_budget(kube, blocked.namespace, 1)
        await asyncio.wait_for(blocked.task, 60)
    told = [r.message for r in caplog.records if r.message.startswith("Not allowed to watch")]
    assert sorted(m.split(" (")[0] for m in told) == [
        "Not allowed to watch poddisruptionbudgets",
        "Not allowed to watch pods",
    ]
    assert not set(blocked.pods_before) & set(await pods_on(kube, blocked.node))


@pytest.mark.usefixtures("slow_clocks")
async def test_skip_wait_for_delete_timeout_ends_the_wait_on_time(
    fleet: FleetFactory, kube: AsyncClient, control_plane: ControlPlane
) -> None:
    """A pod that never goes (here a finalizer holds it, as a dead kubelet would) is not
    waited for once its deletion is older than the timeout, though pods are watched."""
    started = await fleet(2)
    namespace = await started.workload(stop_seconds=0.5)
    config = await as_kured(kube, control_plane, started, repo_rbac())
    standalone = await kube.get(Pod, "standalone", namespace=namespace)
    node = str(standalone.spec.nodeName if standalone.spec else "")
    merge = PatchType.MERGE
    hold, release = ({"metadata": {"finalizers": f}} for f in (["e2e.kured.io/hold"], None))
    await kube.patch(Pod, "standalone", hold, namespace=namespace, patch_type=merge)
    options = dataclasses.replace(
        OPTIONS, grace_period=1, skip_wait_for_delete_after=timedelta(seconds=3)
    )
    try:
        began = time.monotonic()
        async with Kube(load_config(str(config))) as client:
            await asyncio.wait_for(Drainer(client, options).drain(node), LONG)
        took = time.monotonic() - began
        held = await kube.get(Pod, "standalone", namespace=namespace)
    finally:
        await kube.patch(Pod, "standalone", release, namespace=namespace, patch_type=merge)
    # Deleted with 1 s of grace, then 3 s more: not the 30 s between two lists of the pods.
    assert took < 10, f"drain took {took:.1f} s"
    assert held.metadata and held.metadata.deletionTimestamp  # still there, being deleted


async def test_eviction_and_budget_versions_come_from_discovery(
    fleet: FleetFactory,
    kube: AsyncClient,
    control_plane: ControlPlane,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Go kured's RBAC is enough: discovery is open to every authenticated user. The
    Eviction version is read from core discovery's ``pods/eviction`` entry (Kubernetes 1.21
    serves policy/v1 budgets but only policy/v1beta1 evictions), so the entry must say it."""
    caplog.set_level(logging.WARNING, logger="kured.kube")
    started = await fleet(1)
    config = await as_kured(kube, control_plane, started, GO_KURED_RBAC)
    async with Kube(load_config(str(config))) as client:
        assert await client.eviction_version() == "policy/v1beta1"  # the sandbox is 1.20
        assert await client.budget_version() == "policy/v1beta1"
    assert not [r.message for r in caplog.records if "names no Eviction version" in r.message]


async def budget_status(kube: AsyncClient, namespace: str, name: str) -> dict[str, Any]:
    budget = await kube.get(PodDisruptionBudget, name, namespace=namespace)
    return cast(dict[str, Any], budget.status or {})


async def interrupt_eviction(kube: AsyncClient, namespace: str, budget: str, pod: str) -> None:
    """Leave the state an eviction cut short leaves: the Eviction API has recorded the pod
    in the budget's disruptedPods (one disruption fewer allowed) and not deleted it."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    allowed = int((await budget_status(kube, namespace, budget)).get("disruptionsAllowed") or 0)
    status = {"disruptedPods": {pod: now}, "disruptionsAllowed": allowed - 1}
    await kube.patch(
        PodDisruptionBudget.Status,
        budget,
        {"status": status},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )

    async def counted() -> bool:  # the disruption controller keeps it, and allows nothing
        seen = await budget_status(kube, namespace, budget)
        return pod in (seen.get("disruptedPods") or {}) and seen.get("disruptionsAllowed") == 0

    await wait_until(counted, what=f"{pod} counted as disrupted by {budget}", within=30)


async def test_a_pod_an_interrupted_eviction_left_disrupted_is_deleted_not_waited_for(
    fleet: FleetFactory,
    kube: AsyncClient,
    control_plane: ControlPlane,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each eviction of the budget's pods was refused until the disruption controller
    dropped the stranded entry, two minutes on (seen in the chaos rolls, docs/chaos.md)."""
    caplog.set_level(logging.INFO, logger="kured.drain")
    started = await fleet(2)
    namespace = await started.workload(stop_seconds=0.5)
    config = await as_kured(kube, control_plane, started, repo_rbac())
    [web, *_] = [p async for p in kube.list(Pod, namespace=namespace, labels={"app": "web"})]
    assert web.metadata and web.metadata.name and web.spec and web.spec.nodeName
    await interrupt_eviction(kube, namespace, "web", web.metadata.name)
    began = time.monotonic()
    async with draining(config, web.spec.nodeName) as drained:
        await asyncio.wait_for(drained, DISRUPTED_POD_TIMEOUT / 2)
    took = time.monotonic() - began
    deleted = [r.message for r in caplog.records if "was never deleted" in r.message]
    assert deleted == [
        f"Pod {namespace}/{web.metadata.name} is counted as disrupted by PodDisruptionBudget "
        f"{namespace}/web but was never deleted (an interrupted eviction); deleting it"
    ], f"drain took {took:.1f} s"
    assert web.metadata.name not in await pods_on(kube, web.spec.nodeName)


def without_pod_deletes(rbac: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The RBAC as it was before kured deleted stranded pods: no ``delete`` on pods."""
    trimmed = copy.deepcopy(rbac)
    for manifest in trimmed:
        for rule in manifest.get("rules", []):
            if rule.get("resources") == ["pods"]:
                rule["verbs"] = [verb for verb in rule["verbs"] if verb != "delete"]
    return trimmed


async def test_without_the_right_to_delete_pods_the_drain_says_so_once_and_waits(
    fleet: FleetFactory,
    kube: AsyncClient,
    control_plane: ControlPlane,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kured.drain")
    started = await fleet(1)
    namespace = await started.workload(stop_seconds=0.5)
    config = await as_kured(kube, control_plane, started, without_pod_deletes(repo_rbac()))
    [web, *_] = [p async for p in kube.list(Pod, namespace=namespace, labels={"app": "web"})]
    assert web.metadata and web.metadata.name and web.spec and web.spec.nodeName
    stranded = web.metadata.name
    await interrupt_eviction(kube, namespace, "web", stranded)

    def told(what: str) -> int:
        return sum(what in r.message and stranded in r.message for r in caplog.records)

    async def refused_again() -> bool:
        return told("Error when deleting pod") == 1 and told("Error when evicting pod") >= 4

    async with draining(config, web.spec.nodeName):
        await wait_until(refused_again, what="three refusals after the forbidden delete", within=60)
    assert told("Error when deleting pod") == 1
    assert told("was never deleted") == 1
    assert stranded in await pods_on(kube, web.spec.nodeName)
