"""The only door to the Kubernetes API: a thin async layer over lightkube.

Everything kured asks of the API server goes through :class:`Kube`, so the rest
of the daemon speaks in terms of nodes, pods and the DaemonSet, and the tests
of effects run against a real API server rather than against mocks of it.

Two things lightkube does not do for us are done here with the same
authenticated HTTP connection: lists with label selectors given as strings
(kured's flags take selector strings such as ``app in (a,b)``), discovery of
which Eviction API version the server serves (``policy/v1`` since Kubernetes
1.22, ``policy/v1beta1`` before; PodDisruptionBudgets moved a release earlier), and
the drain's watches of the node's pods and of PodDisruptionBudgets, read as plain JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import httpx2
from lightkube import ApiError, AsyncClient, ConfigError, KubeConfig
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import SERVICE_ACCOUNT
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event, Node, Pod
from lightkube.types import PatchType

from kured import evictions
from kured.connections import Replaying
from kured.evictions import EvictionOutcome, eviction_version_in

log = logging.getLogger("kured.kube")

T = TypeVar("T")
WatchEvents = AsyncGenerator[tuple[str, dict[str, Any]], None]  # (type, object JSON)

EVENT_NAMESPACE = "default"  # where kubelets put Node events
EVENT_COMPONENT = "kured"
REQUEST_TIMEOUT = httpx2.Timeout(15.0)
POLICY_V1, POLICY_V1BETA1 = "policy/v1", "policy/v1beta1"
WATCH_SECONDS = 3600  # the server ends each watch after this; lightkube starts a new one
"""Every API call is bounded, so a hung connection never wedges the main loop."""

__all__ = [
    "ApiError",
    "Conflict",
    "DaemonSet",
    "Event",
    "EvictionOutcome",
    "Kube",
    "Lease",
    "NoClusterConfig",
    "Node",
    "Pod",
    "load_config",
]


class Conflict(Exception):
    """A write lost a race: the object changed since we read it (HTTP 409)."""


class NoClusterConfig(ConfigError):
    """Nothing says how to reach the API server; the text says what to set."""


def load_config(kubeconfig: str | None) -> KubeConfig:
    """``--kubeconfig``, else in-cluster config, else ``$KUBECONFIG``, else ``~/.kube/config``.

    Raises :class:`NoClusterConfig` when none of them can be loaded.
    """
    if kubeconfig:
        try:
            return KubeConfig.from_file(kubeconfig)
        except ConfigError as err:
            raise NoClusterConfig(str(err)) from err
    try:
        return KubeConfig.from_env()
    except ConfigError as err:
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise NoClusterConfig(
            f"not in a cluster (no service account token in {SERVICE_ACCOUNT}) and no kubeconfig "
            f"at {where} ({err}); set --kubeconfig or KUBECONFIG, or run kured in its DaemonSet"
        ) from err


class Kube:
    """Typed helpers for exactly the calls kured makes."""

    def __init__(self, config: KubeConfig, field_manager: str = "kured") -> None:
        single = config.get()
        assert single is not None
        # The base URL, auth and TLS context lightkube derives from the config, for raw calls.
        params = ConnectionParams(timeout=REQUEST_TIMEOUT).httpx_params(single)
        connections = Replaying(params["verify"])  # one pool for both clients
        self._client = AsyncClient(
            config, timeout=REQUEST_TIMEOUT, field_manager=field_manager, transport=connections
        )
        self._http = httpx2.AsyncClient(**{**params, "transport": connections})
        self._eviction_version: str | None = None
        self._budget_version: str | None = None

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- nodes -----------------------------------------------------------------

    async def list_nodes(self) -> list[Node]:
        """Every Node in the cluster (``kuredctl status`` shows them all)."""
        return [node async for node in self._client.list(Node)]

    async def get_node(self, name: str) -> Node | None:
        """The Node, or None when it does not exist (deleted from the cluster)."""
        try:
            return await self._client.get(Node, name)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise

    async def watch_node(self, name: str) -> AsyncIterator[tuple[str, Node]]:
        """Changes to one Node; ends when the server closes the watch or it fails."""
        stream = self._client.watch(
            Node, fields={"metadata.name": name}, server_timeout=WATCH_SECONDS
        )
        async for event, obj in stream:
            yield event, obj

    async def watch_nodes(self, labels: Mapping[str, str]) -> AsyncIterator[tuple[str, Node]]:
        """Changes to the Nodes with ``labels`` (a Node that loses them comes as DELETED);
        ends when the server closes the watch or it fails."""
        stream = self._client.watch(Node, labels=dict(labels), server_timeout=WATCH_SECONDS)
        async for event, obj in stream:
            yield event, obj

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> Node:
        """JSON merge patch: a key set to None removes it (labels, annotations)."""
        return await self._client.patch(Node, name, dict(patch), patch_type=PatchType.MERGE)

    async def set_unschedulable(self, name: str, unschedulable: bool) -> Node:
        """Cordon (True) or uncordon (False), as ``kubectl cordon`` does: one spec patch."""
        return await self.patch_node(name, {"spec": {"unschedulable": unschedulable or None}})

    async def set_taints(
        self, name: str, taints: list[dict[str, Any]], resource_version: str
    ) -> Node:
        """Replace the node's taint list, guarded by resourceVersion (409 → :class:`Conflict`)."""
        patch = {"metadata": {"resourceVersion": resource_version}, "spec": {"taints": taints}}
        return await self._conflict_as_error(self.patch_node(name, patch))

    # -- pods --------------------------------------------------------------------

    async def list_pods(
        self, *, node: str | None = None, namespace: str | None = None, selector: str = ""
    ) -> list[Pod]:
        """Pods, optionally on one node and matching a label selector string."""
        pods, _version = await self._pods_listing(node, namespace, selector)
        return pods

    async def node_pods_listing(self, node: str, selector: str = "") -> tuple[list[Pod], str]:
        """The node's pods (matching a label selector string) and the list's resourceVersion,
        from where :meth:`watch_node_pods` goes on."""
        return await self._pods_listing(node, None, selector)

    async def _pods_listing(
        self, node: str | None, namespace: str | None, selector: str
    ) -> tuple[list[Pod], str]:
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        params = {"labelSelector": selector} if selector else {}
        if node:
            params["fieldSelector"] = f"spec.nodeName={node}"
        body = await self._get_json(path, params)
        pods = [cast(Pod, Pod.from_dict(item)) for item in body.get("items", [])]
        return pods, str((body.get("metadata") or {}).get("resourceVersion", ""))

    async def watch_node_pods(self, node: str, resource_version: str) -> WatchEvents:
        """Changes to the node's pods after ``resource_version``, as (type, pod JSON)."""
        params = {"fieldSelector": f"spec.nodeName={node}", "resourceVersion": resource_version}
        async with contextlib.aclosing(self._watch_json("/api/v1/pods", params)) as events:
            async for event in events:
                yield event

    async def evict(
        self, pod: Pod, grace_period: int | None, *, dry_run: bool = False
    ) -> EvictionOutcome:
        """Ask the Eviction API to remove a pod; PodDisruptionBudgets may refuse (429).
        ``dry_run``: the server checks everything, budgets included, and removes nothing."""
        version = await self.eviction_version()
        return await evictions.evict(self._http, version, pod, grace_period, dry_run=dry_run)

    async def delete_pod(self, pod: Pod, grace_period: int | None) -> EvictionOutcome:
        """Delete this very pod (its uid is the precondition), bypassing budgets: only for a
        pod that its budget already counts as disrupted (:mod:`kured.drain`)."""
        return await evictions.delete(self._http, pod, grace_period)

    async def eviction_version(self) -> str:
        """The Eviction subresource's version, as core discovery lists ``pods/eviction``
        (kubectl's way): ``policy/v1`` from Kubernetes 1.22, ``policy/v1beta1`` before.
        Not what ``/apis/policy`` serves: 1.21 serves policy/v1 for budgets, not evictions."""
        if self._eviction_version is None:
            listed = eviction_version_in(await self._get_json("/api/v1", {}))
            if listed is None:
                log.warning("Core discovery names no Eviction version; using %s", POLICY_V1BETA1)
            self._eviction_version = listed or POLICY_V1BETA1
            log.debug("Eviction API: %s", self._eviction_version)
        return self._eviction_version

    async def budget_version(self) -> str:
        """``policy/v1`` when the server serves PodDisruptionBudgets there (1.21+), else
        ``policy/v1beta1`` (cached)."""
        if self._budget_version is None:
            body = await self._get_json("/apis/policy", {})
            served = {v.get("groupVersion") for v in body.get("versions", [])}
            self._budget_version = POLICY_V1 if POLICY_V1 in served else POLICY_V1BETA1
        return self._budget_version

    # -- disruption budgets ---------------------------------------------------------------

    async def watch_budgets(self, namespace: str) -> WatchEvents:
        """The namespace's PodDisruptionBudgets as (type, JSON): every one there is now first
        (as ADDED), then each change, in :meth:`budget_version`; 403 without ``watch`` on
        poddisruptionbudgets raises :class:`ApiError`."""
        path = f"/apis/{await self.budget_version()}/namespaces/{namespace}/poddisruptionbudgets"
        async with contextlib.aclosing(self._watch_json(path, {})) as events:
            async for event in events:
                yield event

    # -- events ----------------------------------------------------------------------

    async def list_events(self, fields: Mapping[str, str]) -> list[Event]:
        """Core Events in every namespace matching a field selector (``{"source": "kured"}``)."""
        stream = self._client.list(Event, namespace="*", fields=dict(fields))
        return [event async for event in stream]

    # -- the DaemonSet that carries the lock ---------------------------------------

    async def get_daemonset(self, namespace: str, name: str) -> DaemonSet:
        return await self._client.get(DaemonSet, name, namespace=namespace)

    async def update_daemonset_annotations(
        self, ds: DaemonSet, annotations: Mapping[str, str | None]
    ) -> DaemonSet:
        """Write annotations with a full update (PUT) guarded by the read resourceVersion.

        An update rather than a patch keeps Go kured's RBAC sufficient (it grants
        ``update`` on its DaemonSet), so operators can swap images without new rules.
        """
        meta = ds.metadata or ObjectMeta()
        merged = dict(meta.annotations or {})
        for key, value in annotations.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        meta.annotations = merged
        ds.metadata = meta
        return await self._conflict_as_error(self._client.replace(ds))

    async def patch_daemonset_annotation(
        self, ds: DaemonSet, key: str, expected: str, value: str | None
    ) -> DaemonSet:
        """Set annotation ``key`` to ``value`` (None: remove it) if it still holds
        ``expected``, whatever else of the DaemonSet changed since it was read.

        A JSON Patch: its ``test`` operation is checked by the API server on the object as
        stored, and the server redoes the patch itself when another write slips in between,
        so only a change of this annotation makes it fail. The server answers a failed
        test with 422 Invalid without causes (a value it refuses names its field): that is
        :class:`Conflict`, as a lost resourceVersion race is.
        """
        meta = ds.metadata or ObjectMeta()
        path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
        write: dict[str, Any] = (
            {"op": "remove", "path": path}
            if value is None
            else {"op": "replace", "path": path, "value": value}
        )
        operations = [{"op": "test", "path": path, "value": expected}, write]
        try:
            return await self._client.patch(
                DaemonSet,
                meta.name or "",
                operations,
                namespace=meta.namespace,
                patch_type=PatchType.JSON,
            )
        except ApiError as err:
            details = err.status.details
            if err.status.code == 422 and not (details and details.causes):
                raise Conflict(f"annotation {key} changed since it was read") from err
            raise

    async def watch_daemonset(
        self, namespace: str, name: str
    ) -> AsyncIterator[tuple[str, DaemonSet]]:
        """Changes to one DaemonSet; ends when the server closes the watch or it fails."""
        stream = self._client.watch(
            DaemonSet,
            namespace=namespace,
            fields={"metadata.name": name},
            server_timeout=WATCH_SECONDS,
        )
        async for event, obj in stream:
            yield event, obj

    # -- leases (``--lock-backend=lease``) ----------------------------------------------------

    async def list_leases(self, namespace: str, labels: Mapping[str, str]) -> list[Lease]:
        return [
            lease
            async for lease in self._client.list(Lease, namespace=namespace, labels=dict(labels))
        ]

    async def create_lease(self, lease: Lease) -> Lease:
        """Create a Lease; 409 (someone created it first) → :class:`Conflict`."""
        return await self._conflict_as_error(self._client.create(lease))

    async def replace_lease(self, lease: Lease) -> Lease:
        """Update a Lease guarded by its resourceVersion (409 → :class:`Conflict`)."""
        return await self._conflict_as_error(self._client.replace(lease))

    async def watch_leases(
        self, namespace: str, labels: Mapping[str, str]
    ) -> AsyncIterator[tuple[str, Lease]]:
        stream = self._client.watch(
            Lease, namespace=namespace, labels=dict(labels), server_timeout=WATCH_SECONDS
        )
        async for event, obj in stream:
            yield event, obj

    async def _conflict_as_error(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except ApiError as err:
            if err.status.code == 409:
                raise Conflict(str(err)) from err
            raise

    # -- events ----------------------------------------------------------------------------

    async def create_node_event(
        self, node: Node, reason: str, message: str, *, warning: bool = False
    ) -> None:
        """An Event about ``node`` in ``default``, where ``kubectl describe node`` finds it."""
        meta = node.metadata or ObjectMeta()
        now = datetime.now(UTC)
        event = Event(
            metadata=ObjectMeta(
                name=f"{meta.name}.{now.strftime('%Y%m%d%H%M%S')}{secrets.token_hex(4)}",
                namespace=EVENT_NAMESPACE,
            ),
            involvedObject=ObjectReference(
                kind="Node", name=meta.name, uid=meta.uid, apiVersion="v1"
            ),
            reason=reason,
            message=message,
            type="Warning" if warning else "Normal",
            source=EventSource(component=EVENT_COMPONENT, host=meta.name),
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
            reportingComponent=EVENT_COMPONENT,
            reportingInstance=meta.name or "",
        )
        await self._client.create(event)

    # -- plumbing --------------------------------------------------------------------

    async def _watch_json(self, path: str, params: Mapping[str, str]) -> WatchEvents:
        """One watch request, its events as (type, object JSON); ends when the server ends it
        or sends an ERROR (e.g. 410: the version is too old). No read timeout: callers bound
        how long they wait."""
        query = {**params, "watch": "1", "timeoutSeconds": str(WATCH_SECONDS)}
        timeout = httpx2.Timeout(REQUEST_TIMEOUT.connect, read=None)
        async with self._http.stream("GET", path, params=query, timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                raise ApiError(request=response.request, response=response)
            async for line in response.aiter_lines():
                if not line:
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    log.debug("watch of %s ended: %s", path, event.get("object"))
                    return
                yield event["type"], event["object"]

    async def _get_json(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        response = await self._http.get(path, params=dict(params))
        if response.status_code >= 400:
            raise ApiError(request=response.request, response=response)
        body: dict[str, Any] = response.json()
        return body
