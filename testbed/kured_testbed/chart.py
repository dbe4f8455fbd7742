"""The Helm chart deploy/helm/kured rendered by the real Helm engine (helm-python-sdk): what
scripts/render-manifests.py writes to deploy/manifests/ and what the lab installs with a
values file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kured"
RELEASE = "kured"
NAMESPACE = "kube-system"
# Helm's install order for the kinds the chart makes.
KIND_ORDER = (
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "ServiceMonitor",
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def render_documents(
    values: dict[str, Any], release: str = RELEASE, namespace: str = NAMESPACE
) -> list[tuple[str, dict[str, Any]]]:
    """The chart's objects, each as its YAML text (comments kept) and parsed, in Helm's
    install order."""
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=release, namespace=namespace)
    documents = [
        (text.strip(), parsed)
        for path, template in sorted(rendered.items())
        if path.endswith(".yaml")
        for text in template.split("\n---")
        if (parsed := load_yaml(text))
    ]
    return sorted(documents, key=lambda document: KIND_ORDER.index(document[1]["kind"]))


def render_objects(
    values: dict[str, Any], release: str = RELEASE, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """The chart's objects, parsed."""
    return [parsed for _, parsed in render_documents(values, release, namespace)]


def app_version() -> str:
    with helm_python.Chart.load(CHART) as chart:
        return str(chart.metadata["appVersion"])
