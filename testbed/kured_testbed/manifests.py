"""kured's deploy manifests, applied for one fleet: the lock lives on a real DaemonSet, and
`--as-serviceaccount` runs the daemons with exactly the RBAC those manifests grant.

Applied into namespace NS: namespaced objects move to NS; ClusterRoles and ClusterRoleBindings
get the suffix -NS (unless NS is kube-system) so fleets in other namespaces do not share them;
ServiceAccount subjects point into NS; the DaemonSet runs only on the fleet's nodes and
tolerates every taint.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from lightkube import ApiError, AsyncClient, codecs
from lightkube.core.resource import GlobalResource, NamespacedResource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding

import kured
from kured_testbed.controlplane import ControlPlane, kubeconfig_text
from kured_testbed.state import FLEET_LABEL, SandboxError, UsageError, atomic_write

SYSTEM_NAMESPACE = "kube-system"
# Cluster-scoped kinds that get a per-namespace name.
CLUSTER_KINDS: dict[str, type[GlobalResource]] = {
    "ClusterRole": ClusterRole,
    "ClusterRoleBinding": ClusterRoleBinding,
}
_CONFLICT = 409


def default_manifests() -> list[Path]:
    """kured's RBAC and (command-method) DaemonSet in <repo>/deploy, next to src/. The
    DaemonSet's variants differ only in what the sandbox does not run (its container)."""
    deploy = Path(kured.__file__).resolve().parents[2] / "deploy"
    return [deploy / "rbac.yaml", deploy / "daemonset.yaml"]


def _yaml_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.glob("*.yaml"))
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"manifests not found: {path} (pass --manifests PATH)")
    return files


def load_manifests(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Every object in the given files (and directories' *.yaml), as dicts; one object may
    be defined only once."""
    objects: list[dict[str, Any]] = []
    origin: dict[tuple[str, str, str], Path] = {}
    for path in _yaml_files(paths):
        try:
            documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        except yaml.YAMLError as error:
            raise UsageError(f"{path}: invalid YAML: {error}") from None
        for doc in documents:
            meta = doc.get("metadata") or {}
            key = (doc.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
            if key in origin:
                raise UsageError(f"{origin[key]} and {path} both define {'/'.join(key)}")
            origin[key] = path
            objects.append(doc)
    if not objects:
        raise UsageError(f"no manifests in {', '.join(map(str, paths))}")
    return objects


def _renamed(name: str, namespace: str) -> str:
    return name if namespace == SYSTEM_NAMESPACE else f"{name}-{namespace}"


def _is_namespaced(manifest: dict[str, Any]) -> bool:
    kind = codecs.resource_registry.load(manifest["apiVersion"], manifest["kind"])
    return issubclass(kind, NamespacedResource)


def adapt(manifest: dict[str, Any], namespace: str, fleet: str) -> dict[str, Any]:
    """One manifest rewritten for namespace and fleet (see the module docstring)."""
    meta = manifest.setdefault("metadata", {})
    kind = manifest["kind"]
    if kind in CLUSTER_KINDS:
        meta["name"] = _renamed(meta["name"], namespace)
    elif _is_namespaced(manifest):
        meta["namespace"] = namespace
    role_ref = manifest.get("roleRef")
    if role_ref and role_ref.get("kind") == "ClusterRole":
        role_ref["name"] = _renamed(role_ref["name"], namespace)
    for subject in manifest.get("subjects") or []:
        if subject.get("kind") == "ServiceAccount":
            subject["namespace"] = namespace
    if kind == "DaemonSet":
        pod_spec = manifest["spec"]["template"]["spec"]
        pod_spec.setdefault("nodeSelector", {})[FLEET_LABEL] = fleet
        pod_spec["tolerations"] = [{"operator": "Exists"}]
    return manifest


def service_account_of(manifests: list[dict[str, Any]]) -> str:
    """The ServiceAccount the DaemonSet runs as (what --as-serviceaccount authenticates as)."""
    for manifest in manifests:
        if manifest["kind"] == "DaemonSet":
            pod_spec = manifest["spec"]["template"]["spec"]
            return str(pod_spec.get("serviceAccountName") or "default")
    raise UsageError("the manifests have no DaemonSet")


async def apply_manifests(
    client: AsyncClient, manifests: list[dict[str, Any]], namespace: str, fleet: str
) -> list[tuple[str, str]]:
    """Create namespace if needed, then server-side apply every adapted manifest. Returns the
    (kind, name) of the cluster-scoped objects it made for this namespace alone."""
    try:
        await client.create(Namespace(metadata=ObjectMeta(name=namespace)))
    except ApiError as error:
        if error.status.code != _CONFLICT:
            raise
    own: list[tuple[str, str]] = []
    for manifest in manifests:
        if manifest["kind"] == "Namespace":  # the target namespace replaces it
            continue
        adapted = adapt(manifest, namespace, fleet)
        await client.apply(codecs.from_dict(adapted), force=True)
        if adapted["kind"] in CLUSTER_KINDS and namespace != SYSTEM_NAMESPACE:
            own.append((adapted["kind"], adapted["metadata"]["name"]))
    return own


async def service_account_kubeconfig(
    client: AsyncClient, plane: ControlPlane, namespace: str, account: str, within: float = 30.0
) -> Path:
    """STATE/kubeconfig-sa-<namespace>: the ServiceAccount's token (from the Secret that the
    1.20 token controller makes for it) with the admin kubeconfig's server and CA."""
    deadline = time.monotonic() + within
    while True:
        sa = await client.get(ServiceAccount, account, namespace=namespace)
        if sa.secrets:
            break
        if time.monotonic() > deadline:
            raise SandboxError(f"no token for ServiceAccount {namespace}/{account}")
        await asyncio.sleep(0.2)
    secret = await client.get(Secret, str(sa.secrets[0].name), namespace=namespace)
    data = secret.data or {}
    token = base64.b64decode(data["token"]).decode()
    ca_pem = base64.b64decode(data["ca.crt"])
    path = plane.state.sa_kubeconfig(namespace)
    atomic_write(path, kubeconfig_text(plane.server, ca_pem, token, f"{namespace}-{account}"))
    return path
