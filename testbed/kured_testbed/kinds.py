"""API kinds of the sandbox's Kubernetes 1.20 that lightkube's bundled (newer) models lack:
PodDisruptionBudget and Eviction are policy/v1beta1 there (policy/v1 came in 1.22)."""

from __future__ import annotations

from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import PodEviction

PodDisruptionBudget = create_namespaced_resource(
    "policy", "v1beta1", "PodDisruptionBudget", "poddisruptionbudgets"
)


def eviction(name: str, namespace: str) -> PodEviction:
    """An Eviction body for 1.20: lightkube's model says policy/v1, the server wants v1beta1.
    The model's __post_init__ forces policy/v1, so the version is set after construction."""
    body = PodEviction(metadata=ObjectMeta(name=name, namespace=namespace))
    body.apiVersion = "policy/v1beta1"
    return body
