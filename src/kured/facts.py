"""Pure readings of Node and Pod objects: what the agent concludes from what the API shows.

Kept apart from :mod:`kured.agent` so the rules (is a node healthy after its reboot, is a
lock holder still using its slot, does a node count as down) are unit-tested on plain
objects, and the agent module holds only the loop and its effects.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from kured.capacity import NodeState
from kured.kube import DaemonSet, Node, Pod
from kured.lockformat import LockEntry
from kured.policy import (
    PAUSED_ANNOTATION,
    PROGRESS_ANNOTATION,
    STATUS_ANNOTATION,
    HolderFacts,
    PauseNote,
    Phase,
    Progress,
)


def labels(node: Node) -> dict[str, str]:
    return dict((node.metadata.labels if node.metadata else None) or {})


def annotations_of(obj: Node | DaemonSet) -> dict[str, str]:
    """An object's annotations (an empty dict when it has none)."""
    return dict((obj.metadata.annotations if obj.metadata else None) or {})


def status_of(node: Node) -> dict[str, Any]:
    with contextlib.suppress(ValueError, TypeError):
        value = json.loads(annotations_of(node).get(STATUS_ANNOTATION) or "{}")
        if isinstance(value, dict):
            return value
    return {}


def witnessed(facts: HolderFacts, entry: LockEntry, watched: float) -> HolderFacts:
    """A holder's ages, no longer than this agent has watched it in its present state.

    Expiry and condition age compare the wall clocks of different machines (the holder's,
    its kubelet's, this node's): one that jumps ahead would make a holder that is mid-reboot
    look stale at once, and a second node would go down beside it. Measured at most over
    ``watched`` seconds of this node's monotonic clock (since it first saw the same entry,
    readiness, phase and boot), a wrong wall clock can only delay a reclaim.
    """
    return replace(
        facts,
        expired=facts.expired and watched >= entry.ttl.total_seconds(),
        condition_age=min(facts.condition_age, watched),
    )


def holder_facts(entry: LockEntry, node: Node | None, now: datetime) -> HolderFacts:
    """What a lock holder's Node says about whether it is still using its slot."""
    hand_set, expired = entry.created is None, entry.expired(now)
    if node is None:
        return HolderFacts(node_exists=False, hand_set=hand_set, expired=expired)
    progress = Progress.from_json(annotations_of(node).get(PROGRESS_ANNOTATION))
    status = node.status
    boot = status.nodeInfo.bootID if status and status.nodeInfo else ""
    ready = next(
        (c for c in (status.conditions if status else None) or [] if c.type == "Ready"), None
    )
    since = ready.lastTransitionTime if ready else None
    return HolderFacts(
        node_exists=True,
        hand_set=hand_set,
        expired=expired,
        phase=progress.phase,
        boot_changed=bool(progress.boot_id) and boot != progress.boot_id,
        ready=bool(ready and ready.status == "True"),
        condition_age=(now - since).total_seconds() if since else math.inf,
    )


PRESSURE_CONDITIONS = ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")


def node_health_problem(node: Node, boot_before: str) -> str:
    """The kubelet's view: Ready, no pressure, and a boot id other than the one before."""
    status = node.status
    conditions = {c.type: c.status for c in (status.conditions if status else None) or []}
    if conditions.get("Ready") != "True":
        return "node not Ready"
    pressured = [c for c in PRESSURE_CONDITIONS if conditions.get(c) == "True"]
    if pressured:
        return f"node under {', '.join(pressured)}"
    boot = status.nodeInfo.bootID if status and status.nodeInfo else ""
    if boot_before and boot == boot_before:
        return "kubelet still reports the boot id from before the reboot"
    return ""


def pod_ready(pod: Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def pod_key(pod: Pod) -> str:
    meta = pod.metadata
    return f"{meta.namespace}/{meta.name}" if meta else "?"


def age(rfc3339: str, now: datetime) -> timedelta:
    try:
        return now - datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    except ValueError:
        return timedelta(0)


def node_state(node: Node) -> NodeState:
    """A Node as ``--max-unavailable`` counts it."""
    conditions = (node.status.conditions if node.status else None) or []
    progress = Progress.from_json(annotations_of(node).get(PROGRESS_ANNOTATION))
    return NodeState(
        name=(node.metadata.name if node.metadata else None) or "",
        ready=any(c.type == "Ready" and c.status == "True" for c in conditions),
        unschedulable=bool(node.spec and node.spec.unschedulable),
        draining=progress.phase is not Phase.IDLE,
    )


def paused(ds: DaemonSet, node: Node) -> str:
    for scope, obj in (("cluster-wide", ds), ("node", node)):
        value = annotations_of(obj).get(PAUSED_ANNOTATION)
        if value is not None:
            return f"{scope}, {PauseNote.parse(value).describe()}"
    return ""
