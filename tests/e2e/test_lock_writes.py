"""Lock writes against the real API server: a JSON Patch that tests the lock's value.

A write conflicts only with another write of the same lock, not with whatever else of the
DaemonSet moved since it was read (issue 18: with resourceVersion-guarded updates a
100-node roll lost 3104 writes to 409s for 142 that landed). Where RBAC grants Go kured's
``update`` alone, writes fall back to it, and say so once.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType

from kured.kube import Kube, load_config
from kured.lock import DaemonSetLock
from kured.lockformat import parse
from kured_testbed.controlplane import ControlPlane
from kured_testbed.manifests import apply_manifests, service_account_kubeconfig

pytestmark = pytest.mark.e2e

ANNOTATION = "weave.works/kured-node-lock"
_numbers = itertools.count(1)


def daemonset(namespace: str) -> dict[str, Any]:
    """kured's DaemonSet in name only: it selects no node, so it runs no pod."""
    labels = {"app": "kured-lock-test"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "kured", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"kured-lock-test": "no-such-node"},
                    "containers": [{"name": "kured", "image": "kured:none"}],
                },
            },
        },
    }


def go_kured_role() -> list[dict[str, Any]]:
    """Go kured's namespaced Role on its DaemonSet: get and update, no patch."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kured"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "kured"},
            "rules": [
                {
                    "apiGroups": ["apps"],
                    "resources": ["daemonsets"],
                    "resourceNames": ["kured"],
                    "verbs": ["get", "update"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "kured"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kured"},
            "subjects": [{"kind": "ServiceAccount", "name": "kured"}],
        },
    ]


@pytest.fixture
async def namespace(kube: AsyncClient) -> AsyncIterator[str]:
    """A namespace holding only kured's DaemonSet; deleted after the test."""
    name = f"lock-writes-{next(_numbers)}"
    await apply_manifests(kube, [daemonset(name)], name, name)
    try:
        yield name
    finally:
        await kube.delete(Namespace, name)


def lock_of(kube: Kube, namespace: str, node: str, concurrency: int = 2) -> DaemonSetLock:
    return DaemonSetLock(
        kube,
        namespace=namespace,
        name="kured",
        annotation=ANNOTATION,
        node_id=node,
        ttl=timedelta(0),
        concurrency=concurrency,
    )


async def touch(kube: AsyncClient, namespace: str, value: str) -> None:
    """Another writer changes the DaemonSet, not the lock (its resourceVersion moves)."""
    patch = {"metadata": {"annotations": {"example.com/other": value}}}
    await kube.patch(DaemonSet, "kured", patch, namespace=namespace, patch_type=PatchType.MERGE)


async def holders(kube: AsyncClient, namespace: str) -> list[str]:
    ds = await kube.get(DaemonSet, "kured", namespace=namespace)
    text = (ds.metadata.annotations or {}).get(ANNOTATION) if ds.metadata else None
    return parse(text).holders()


def conflicts(caplog: pytest.LogCaptureFixture) -> int:
    return sum("lock write conflict" in r.getMessage() for r in caplog.records)


async def test_a_lock_write_does_not_lose_to_other_changes_of_the_daemonset(
    control_plane: ControlPlane,
    kube: AsyncClient,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="kured.lock")
    async with Kube(load_config(str(control_plane.kubeconfig))) as client:
        first, second = lock_of(client, namespace, "n1"), lock_of(client, namespace, "n2")
        assert (await first.acquire(False))[0]
        await second.snapshot(await client.get_daemonset(namespace, "kured"))
        await touch(kube, namespace, "moved")  # the snapshot's resourceVersion is stale now

        assert await second.acquire(False) == (True, ["n1", "n2"])
        await first.snapshot(await client.get_daemonset(namespace, "kured"))
        await touch(kube, namespace, "moved again")
        assert await first.release()

    assert await holders(kube, namespace) == ["n2"]
    assert conflicts(caplog) == 0


async def test_a_write_over_a_lock_changed_since_it_was_read_reads_it_again(
    control_plane: ControlPlane,
    kube: AsyncClient,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="kured.lock")
    async with Kube(load_config(str(control_plane.kubeconfig))) as client:
        assert (await lock_of(client, namespace, "n1").acquire(False))[0]
        late = lock_of(client, namespace, "n2")
        await late.snapshot(await client.get_daemonset(namespace, "kured"))
        assert (await lock_of(client, namespace, "n3").acquire(False))[0]  # both slots taken

        assert await late.acquire(False) == (False, ["n1", "n3"])

    assert conflicts(caplog) == 1
    assert await holders(kube, namespace) == ["n1", "n3"]


async def test_go_kured_rbac_without_patch_still_takes_and_gives_the_lock(
    control_plane: ControlPlane,
    kube: AsyncClient,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kured.lock")
    await apply_manifests(kube, go_kured_role(), namespace, namespace)
    config: Path = await service_account_kubeconfig(kube, control_plane, namespace, "kured")
    async with Kube(load_config(str(config))) as client:
        assert (await lock_of(client, namespace, "n1").acquire(False))[0]  # an update
        second = lock_of(client, namespace, "n2")
        assert (await second.acquire(False))[0]  # over a lock already there: patch refused
        assert await second.release()

    assert await holders(kube, namespace) == ["n1"]
    refused = [r for r in caplog.records if "Not allowed to patch DaemonSet" in r.getMessage()]
    assert len(refused) == 1
