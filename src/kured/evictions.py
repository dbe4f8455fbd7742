"""Removing one pod for a drain: the Eviction subresource, and a delete of that very pod.

Plain JSON over :class:`kured.kube.Kube`'s authenticated connection (callers go through
Kube): the Eviction body's version depends on the server (``policy/v1`` from Kubernetes
1.22, ``policy/v1beta1`` before), and the answer that matters most, a PodDisruptionBudget's
refusal, is a Status whose causes say why, which the drain reports in the budget's words.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from lightkube.resources.core_v1 import Pod


@dataclass(frozen=True)
class EvictionOutcome:
    """What the Eviction API said about one pod."""

    evicted: bool
    gone: bool = False  # the pod no longer exists (counts as done)
    blocked_by: str = ""  # why the server refused (HTTP 429: a PodDisruptionBudget forbids it)


async def evict(
    http: httpx2.AsyncClient,
    version: str,
    pod: Pod,
    grace_period: int | None,
    *,
    dry_run: bool = False,
) -> EvictionOutcome:
    """POST an Eviction of ``version`` for ``pod``; ``dry_run`` (``?dryRun=All``, checked
    against the sandbox's Kubernetes 1.20) has the server check budgets and remove nothing."""
    meta = pod.metadata
    assert meta is not None and meta.name and meta.namespace
    body = {
        "apiVersion": version,
        "kind": "Eviction",
        "metadata": {"name": meta.name, "namespace": meta.namespace},
        "deleteOptions": _delete_options(pod, grace_period) or None,
    }
    url = f"/api/v1/namespaces/{meta.namespace}/pods/{meta.name}/eviction"
    params = {"dryRun": "All"} if dry_run else {}
    response = await http.post(url, json={k: v for k, v in body.items() if v}, params=params)
    if response.status_code in (200, 201):
        return EvictionOutcome(evicted=True)
    if response.status_code == 404:
        return EvictionOutcome(evicted=False, gone=True)
    if response.status_code == 429:
        return EvictionOutcome(evicted=False, blocked_by=_status_reason(response))
    if response.status_code == 409 and meta.uid:
        # The uid precondition failed: a new pod of the same name replaced ours.
        return EvictionOutcome(evicted=False, gone=True)
    # Anything else (e.g. 500 for a pod under two budgets) is retried like a 429, until
    # --drain-timeout: the drain reports it rather than the daemon crashing on it.
    return _refused(response)


async def delete(http: httpx2.AsyncClient, pod: Pod, grace_period: int | None) -> EvictionOutcome:
    """DELETE this very pod: its uid is the precondition, so a new pod of the same name
    (409) counts as this one gone."""
    meta = pod.metadata
    assert meta is not None and meta.name and meta.namespace
    url = f"/api/v1/namespaces/{meta.namespace}/pods/{meta.name}"
    options = {"apiVersion": "v1", "kind": "DeleteOptions", **_delete_options(pod, grace_period)}
    response = await http.request("DELETE", url, json=options)
    if response.status_code in (200, 202):
        return EvictionOutcome(evicted=True)
    if response.status_code in (404, 409):
        return EvictionOutcome(evicted=False, gone=True)
    return _refused(response)


def eviction_version_in(core_discovery: Mapping[str, Any]) -> str | None:
    """``group/version`` of ``pods/eviction`` in an ``/api/v1`` resource list, if it says."""
    for resource in core_discovery.get("resources", []):
        if resource.get("name") == "pods/eviction" and resource.get("version"):
            return f"{resource.get('group') or 'policy'}/{resource['version']}"
    return None


def _delete_options(pod: Pod, grace_period: int | None) -> dict[str, Any]:
    """DeleteOptions for exactly this pod: its uid as precondition, ``--drain-grace-period``."""
    options: dict[str, Any] = {}
    if grace_period is not None and grace_period >= 0:
        options["gracePeriodSeconds"] = grace_period
    if pod.metadata and pod.metadata.uid:
        options["preconditions"] = {"uid": pod.metadata.uid}
    return options


def _refused(response: httpx2.Response) -> EvictionOutcome:
    return EvictionOutcome(
        evicted=False, blocked_by=f"HTTP {response.status_code}: {_status_reason(response)}"
    )


def _status_reason(response: httpx2.Response) -> str:
    """The most specific message in a Status body (the PDB's own words when present)."""
    with contextlib.suppress(ValueError):
        status = response.json()
        causes = (status.get("details") or {}).get("causes") or []
        messages = [c.get("message", "") for c in causes if c.get("message")]
        return "; ".join(messages) or status.get("message", "")
    return response.text
