"""The Helm chart's objects on a real API server: they pass server-side validation
(dryRun=All), then, created for real, give kured's ServiceAccount exactly the access it needs,
asked of the RBAC authorizer with SubjectAccessReviews as the admin.

Two installs: the defaults in kube-system, and in another namespace under another release
name with the lease lock backend. Their DaemonSets select no node (an extra nodeSelector
label), so no pod lands on other tests' simulated nodes; everything is deleted at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient, codecs
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.core_v1 import Namespace

from kured_testbed.api import wait_until
from kured_testbed.chart import render_objects
from kured_testbed.controlplane import ControlPlane

pytestmark = pytest.mark.e2e


NOT_SCHEDULED = {"nodeSelector": {"e2e.kured.io/chart-apply": "no-node-has-this"}}
NOT_FOUND = 404


@dataclass(frozen=True)
class Install:
    release: str
    namespace: str
    values: dict[str, Any]

    @property
    def name(self) -> str:
        """The chart's full name: DaemonSet, ServiceAccount, roles."""
        return self.release if "kured" in self.release else f"{self.release}-kured"

    def objects(self) -> list[dict[str, Any]]:
        values = {**self.values, **NOT_SCHEDULED}
        objects: list[dict[str, Any]] = render_objects(values, self.release, self.namespace)
        return objects


DEFAULTS = Install("kured-chart-e2e", "kube-system", {})
LEASES = Install("chart-e2e", "chart-e2e-ops", {"configuration": {"lockBackend": "lease"}})


@pytest.fixture(scope="module")
async def admin(control_plane: ControlPlane) -> AsyncIterator[AsyncClient]:
    """Both installs created (after a dry run of each object), and deleted afterwards."""
    async with control_plane.client() as client:
        created: list[Any] = []
        try:
            namespace = Namespace(metadata=ObjectMeta(name=LEASES.namespace))
            created.append(await client.create(namespace))
            resources = [codecs.from_dict(o) for i in (DEFAULTS, LEASES) for o in i.objects()]
            for resource in resources:
                await client.create(resource, dry_run=True)
            with pytest.raises(ApiError) as missing:
                await client.get(DaemonSet, DEFAULTS.name, namespace=DEFAULTS.namespace)
            assert missing.value.status.code == NOT_FOUND  # a dry run stores nothing
            for resource in resources:
                created.append(await client.create(resource))
            yield client
        finally:
            for resource in reversed(created):
                meta = resource.metadata
                await client.delete(type(resource), meta.name, namespace=meta.namespace)


async def can(
    client: AsyncClient,
    install: Install,
    verb: str,
    resource: str,
    *,
    namespace: str = "",
    name: str = "",
    group: str = "",
) -> bool:
    """Whether the install's ServiceAccount may do this, per the API server's authorizer."""
    resource, _, subresource = resource.partition("/")
    review = SubjectAccessReview(
        spec=SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{install.namespace}:{install.name}",
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{install.namespace}",
                "system:authenticated",
            ],
            resourceAttributes=ResourceAttributes(
                verb=verb,
                group=group,
                resource=resource,
                subresource=subresource,
                namespace=namespace,
                name=name,
            ),
        )
    )
    result = await client.create(review)
    return bool(result.status and result.status.allowed)


# (verb, resource, namespace, name, group); "NS" and "DS" stand for the install's namespace
# and DaemonSet name.
KURED_NEEDS = [
    ("get", "daemonsets", "NS", "DS", "apps"),
    ("update", "daemonsets", "NS", "DS", "apps"),
    ("list", "daemonsets", "NS", "DS", "apps"),
    ("watch", "daemonsets", "NS", "DS", "apps"),
    ("get", "nodes", "", "node-1", ""),
    ("patch", "nodes", "", "node-1", ""),
    ("watch", "nodes", "", "node-1", ""),
    ("list", "pods", "", "", ""),
    ("watch", "pods", "", "", ""),
    ("create", "pods/eviction", "default", "web-1", ""),
    ("delete", "pods", "default", "web-1", ""),  # only a pod left disrupted (kured.drain)
    ("watch", "poddisruptionbudgets", "default", "", "policy"),
    ("create", "events", "default", "", ""),
    ("patch", "events", "default", "", ""),
]
KURED_MUST_NOT = [
    ("delete", "nodes", "", "node-1", ""),
    ("update", "nodes", "", "node-1", ""),
    ("update", "poddisruptionbudgets", "default", "web", "policy"),
    ("update", "poddisruptionbudgets/status", "default", "web", "policy"),
    ("get", "secrets", "NS", "", ""),
    ("update", "daemonsets", "NS", "kube-proxy", "apps"),
    ("delete", "daemonsets", "NS", "DS", "apps"),
    ("get", "daemonsets", "default", "DS", "apps"),
    ("create", "leases", "default", "", "coordination.k8s.io"),
]
LEASE_ACCESS = [("get", "leases", "NS", "", "coordination.k8s.io")] + [
    (verb, "leases", "NS", "lock-0", "coordination.k8s.io")
    for verb in ("create", "update", "watch")
]


async def check(client: AsyncClient, install: Install, case: tuple[str, ...]) -> bool:
    verb, resource, namespace, name, group = case
    namespace = install.namespace if namespace == "NS" else namespace
    name = install.name if name == "DS" else name
    return await can(client, install, verb, resource, namespace=namespace, name=name, group=group)


@pytest.mark.parametrize("install", [DEFAULTS, LEASES], ids=["kube-system", "other-namespace"])
async def test_service_account_has_what_kured_needs_and_no_more(
    admin: AsyncClient, install: Install
) -> None:
    async def bound() -> bool:  # the authorizer sees new bindings after its cache syncs
        return await check(admin, install, KURED_NEEDS[0])

    await wait_until(bound, what=f"RBAC of {install.name} in effect", within=15)
    allowed = {case: await check(admin, install, case) for case in KURED_NEEDS + KURED_MUST_NOT}
    assert [case for case in KURED_NEEDS if not allowed[case]] == []
    assert [case for case in KURED_MUST_NOT if allowed[case]] == []
    lease_access = [await check(admin, install, case) for case in LEASE_ACCESS]
    assert lease_access == [install is LEASES] * len(LEASE_ACCESS)


async def test_the_daemonset_is_stored_as_rendered(admin: AsyncClient) -> None:
    stored = await admin.get(DaemonSet, DEFAULTS.name, namespace=DEFAULTS.namespace)
    assert stored.spec and stored.spec.template.spec
    (container,) = stored.spec.template.spec.containers
    assert container.args and container.args[:2] == [
        f"--ds-name={DEFAULTS.name}",
        "--ds-namespace=kube-system",
    ]
    assert stored.spec.template.spec.hostPID is True
    assert container.securityContext and container.securityContext.privileged is True
