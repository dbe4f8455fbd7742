"""kured_testbed.lab.install on a real API server of its own (no nodes, so the DaemonSets run
no pod and no other test sees them): the shipped manifests and the chart with a Go kured
user's values apply for real and are stored with the lab's image, never pulled."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import ApiError
from lightkube.models.core_v1 import Container
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import DaemonSet

from kured_testbed.api import wait_until
from kured_testbed.controlplane import ControlPlane
from kured_testbed.lab.images import KURED_IMAGE
from kured_testbed.lab.install import apply, kured_objects
from kured_testbed.state import SandboxError

pytestmark = pytest.mark.e2e

GO_VALUES = Path(__file__).parents[1] / "unit" / "data" / "go-kured-values.yaml"
NOT_FOUND = 404
# The Prometheus operator's CRD for the ServiceMonitor the Go user's values ask for, as little
# of it as the API server needs to serve the kind.
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {"kind": "ServiceMonitor", "plural": "servicemonitors"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    started = ControlPlane.start(tmp_path_factory.mktemp("lab-install"))
    try:
        yield started
    finally:
        started.stop()


async def stored_container(plane: ControlPlane) -> Container:
    """The kured container of the DaemonSet as the API server stored it."""
    async with plane.client() as client:
        stored = await client.get(DaemonSet, "kured", namespace="kube-system")
    assert stored.spec and stored.spec.template.spec
    (container,) = stored.spec.template.spec.containers
    return container


async def test_a_dry_run_stores_nothing(plane: ControlPlane) -> None:
    await apply(plane.kubeconfig, kured_objects("command", "manifests"), dry_run=True)
    async with plane.client() as client:
        with pytest.raises(ApiError) as missing:
            await client.get(DaemonSet, "kured", namespace="kube-system")
    assert missing.value.status.code == NOT_FOUND


async def test_the_shipped_manifests_apply_with_the_lab_image(plane: ControlPlane) -> None:
    await apply(plane.kubeconfig, kured_objects("command", "manifests"))
    command = await stored_container(plane)
    assert (command.image, command.imagePullPolicy) == (KURED_IMAGE, "Never")
    await apply(plane.kubeconfig, kured_objects("signal", "manifests"))
    signal = await stored_container(plane)
    assert (signal.image, signal.imagePullPolicy) == (KURED_IMAGE, "Never")
    assert set(signal.args or []) - set(command.args or []) == {"--reboot-method=signal"}


async def test_helm_with_go_values_applies_up_to_the_service_monitor(plane: ControlPlane) -> None:
    """Helm's order puts the ServiceMonitor last: without its CRD the rest is in place and
    the error says what to do."""
    objects = kured_objects("signal", "helm", GO_VALUES)
    assert objects[-1]["kind"] == "ServiceMonitor"
    with pytest.raises(SandboxError, match=r"^ServiceMonitor \(monitoring.coreos.com/v1\) is not"):
        await apply(plane.kubeconfig, objects)
    stored = await stored_container(plane)
    assert (stored.image, stored.imagePullPolicy) == (KURED_IMAGE, "Never")
    assert {"--lock-release-delay=5m", "--reboot-method=signal"} <= set(stored.args or [])


# The API server stores a custom resource: build-control-plane.sh vendors reflect2 1.0.2 (with
# the source package's 1.0.1, kube-apiserver built by Go >= 1.18 died of SIGSEGV here).
async def test_the_service_monitor_applies_once_its_crd_is_served(plane: ControlPlane) -> None:
    await apply(plane.kubeconfig, [SERVICE_MONITOR_CRD])
    await served(plane, "servicemonitors.monitoring.coreos.com")
    await apply(plane.kubeconfig, kured_objects("signal", "helm", GO_VALUES))


async def served(plane: ControlPlane, crd: str) -> None:
    """Wait until the API server serves the CRD's kind (Established)."""
    async with plane.client() as client:

        async def established() -> bool:
            found = await client.get(CustomResourceDefinition, crd)
            conditions = (found.status and found.status.conditions) or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        await wait_until(established, what=f"{crd} established", within=30)
