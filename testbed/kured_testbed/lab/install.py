"""kured installed on the lab's cluster exactly as users install it: the released
deploy/manifests/ file (or its -signal variant) as shipped, or deploy/helm/kured rendered by
the real Helm engine with the user's values file. The only change is each kured container's
image, to the lab's locally built KURED_IMAGE, with imagePullPolicy Never (no registry is
reachable, the image is loaded into every guest's containerd).

    objects = kured_objects("signal", "helm", Path("values.yaml"))
    await apply(state_dir / "kubeconfig", objects)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from lightkube import ApiError, AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import LoadResourceError
from lightkube.core.resource import GlobalResource, NamespacedResource
from lightkube.generic_resource import async_load_in_cluster_generic_resources

from kured_testbed.chart import ROOT, app_version, render_objects
from kured_testbed.lab.images import KURED_IMAGE
from kured_testbed.manifests import load_manifests
from kured_testbed.state import SandboxError, UsageError

Method = Literal["command", "signal"]
Source = Literal["manifests", "helm"]
MANIFESTS = ROOT / "deploy" / "manifests"
PULL_POLICY = "Never"
FIELD_MANAGER = "kured-lab"


def shipped_manifest(method: Method) -> Path:
    """deploy/manifests/kured-<version>.yaml, or kured-<version>-signal.yaml."""
    suffix = "-signal" if method == "signal" else ""
    return MANIFESTS / f"kured-{app_version()}{suffix}.yaml"


def _values(path: Path | None, method: Method) -> dict[str, Any]:
    """The values file (or none) with, for the signal method, the chart's own value for it."""
    try:
        values = (yaml.safe_load(path.read_text()) if path else None) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UsageError(f"--values {path}: {error}".splitlines()[0]) from None
    if not isinstance(values, dict):
        raise UsageError(f"--values {path}: not a mapping of Helm values")
    configuration = values.setdefault("configuration", {})
    chosen = configuration.get("rebootMethod") or "command"
    if method == "signal":
        configuration["rebootMethod"] = "signal"
    elif chosen != method:
        raise UsageError(
            f"--values {path} sets configuration.rebootMethod={chosen}; "
            f"pass --reboot-method {chosen}"
        )
    return values


def is_kured_image(image: str) -> bool:
    """Whether IMAGE (registry/path/name:tag) names a kured image."""
    name = image.rsplit("/", 1)[-1].partition("@")[0].partition(":")[0]
    return name == "kured"


def use_lab_image(manifest: dict[str, Any]) -> dict[str, Any]:
    """MANIFEST with each kured container of a pod template running KURED_IMAGE, never pulled."""
    pod_spec = manifest.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod_spec.get("initContainers", []) + pod_spec.get("containers", []):
        if is_kured_image(container.get("image", "")):
            container["image"] = KURED_IMAGE
            container["imagePullPolicy"] = PULL_POLICY
    return manifest


def kured_objects(
    method: Method, source: Source, values: Path | None = None
) -> list[dict[str, Any]]:
    """The objects kured is installed with: deploy/manifests/kured-<v>.yaml (or -signal) as
    shipped, or deploy/helm/kured rendered by the real Helm engine with the values file
    (signal: the chart's own value for it), changing nothing but each kured container's
    image (-> KURED_IMAGE) and imagePullPolicy (-> Never)."""
    if source == "manifests":
        if values is not None:
            raise UsageError("--values needs --install helm (the manifests are used as shipped)")
        objects = load_manifests([shipped_manifest(method)])
    else:
        objects = render_objects(_values(values, method))
    return [use_lab_image(manifest) for manifest in objects]


def _resource(manifest: dict[str, Any]) -> GlobalResource | NamespacedResource:
    try:
        return codecs.from_dict(manifest)
    except LoadResourceError:
        kind = f"{manifest.get('kind')} ({manifest.get('apiVersion')})"
        raise SandboxError(
            f"{kind} is not served by the API server: install its CustomResourceDefinition "
            "first, or leave it out of the values (metrics.create: false for a ServiceMonitor)"
        ) from None


async def apply(kubeconfig: Path, objects: list[dict[str, Any]], *, dry_run: bool = False) -> None:
    """Server-side apply each object (force: the lab owns them), as the kubeconfig's user;
    kinds from CustomResourceDefinitions the cluster has are known too. dry_run: validated
    and admitted by the API server, stored nowhere."""
    config = KubeConfig.from_file(kubeconfig)
    async with AsyncClient(config, field_manager=FIELD_MANAGER, trust_env=False) as client:
        await async_load_in_cluster_generic_resources(client)
        for manifest in objects:
            resource = _resource(manifest)
            try:
                await client.apply(resource, force=True, dry_run=dry_run)
            except ApiError as error:
                meta = manifest.get("metadata", {})
                what = f"{manifest.get('kind')}/{meta.get('name')}"
                raise SandboxError(f"applying {what}: {error.status.message}") from None
