"""Pure helpers of the agent and the drain: what a Node or Pod object says."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Node, Pod

from kured.drain import must_stay
from kured.facts import holder_facts, node_health_problem, witnessed
from kured.lockformat import LockEntry
from kured.policy import Phase, Progress, reclaim_reason

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def node(
    ready: str = "True",
    boot: str = "boot-b",
    progress: Progress | None = None,
    since: datetime = NOW - timedelta(minutes=5),
    **conditions: str,
) -> Node:
    body: dict[str, Any] = {
        "metadata": {
            "name": "n1",
            "annotations": {"kured.dev/progress": progress.to_json()} if progress else {},
        },
        "status": {
            "nodeInfo": {
                "bootID": boot,
                **dict.fromkeys(
                    [
                        "architecture",
                        "containerRuntimeVersion",
                        "kernelVersion",
                        "kubeProxyVersion",
                        "kubeletVersion",
                        "machineID",
                        "operatingSystem",
                        "osImage",
                        "systemUUID",
                    ],
                    "",
                ),
            },
            "conditions": [
                {"type": "Ready", "status": ready, "lastTransitionTime": since.isoformat()},
                *({"type": k, "status": v} for k, v in conditions.items()),
            ],
        },
    }
    return cast(Node, Node.from_dict(body))


def test_healthy_after_reboot() -> None:
    assert node_health_problem(node(), "boot-a") == ""


def test_not_ready_or_pressured_or_same_boot() -> None:
    assert node_health_problem(node(ready="Unknown"), "boot-a") == "node not Ready"
    assert node_health_problem(node(DiskPressure="True"), "boot-a") == "node under DiskPressure"
    assert "boot id" in node_health_problem(node(boot="boot-a"), "boot-a")


def test_holder_facts_of_a_deleted_node() -> None:
    facts = holder_facts(LockEntry("gone", NOW), None, NOW)
    assert not facts.node_exists
    assert not facts.hand_set


def test_holder_facts_mid_reboot() -> None:
    progress = Progress(Phase.REBOOTING, "boot-a")
    facts = holder_facts(
        LockEntry("n1", NOW - timedelta(hours=2), timedelta(hours=1)),
        node(ready="False", boot="boot-a", progress=progress),
        NOW,
    )
    assert facts.expired
    assert facts.phase is Phase.REBOOTING
    assert not facts.boot_changed
    assert not facts.ready
    assert math.isclose(facts.condition_age, 300)


def test_hand_set_entry_has_no_creation_time() -> None:
    assert holder_facts(LockEntry("manual"), None, NOW).hand_set


def pod(**meta: Any) -> Pod:
    return Pod(metadata=ObjectMeta(name="p", namespace="ns", **meta))


def test_drain_leaves_daemonset_and_mirror_pods() -> None:
    ds_owner = OwnerReference(
        apiVersion="apps/v1", kind="DaemonSet", name="d", uid="u", controller=True
    )
    rs_owner = OwnerReference(
        apiVersion="apps/v1", kind="ReplicaSet", name="r", uid="u", controller=True
    )
    assert must_stay(pod(ownerReferences=[ds_owner]))
    assert must_stay(pod(annotations={"kubernetes.io/config.mirror": "x"}))
    assert not must_stay(pod(ownerReferences=[rs_owner]))
    assert not must_stay(pod())  # unmanaged pods are evicted too (kured drains with --force)


def test_a_holder_is_never_older_than_this_agent_has_watched_it() -> None:
    """A wall clock an hour ahead makes a holder mid-reboot look NotReady for an hour."""
    entry = LockEntry("n1", NOW - timedelta(hours=1), timedelta(seconds=30))
    rebooting = Progress(Phase.REBOOTING, "boot-a")
    holder = node(ready="False", boot="boot-a", progress=rebooting, since=NOW - timedelta(hours=1))
    facts = holder_facts(entry, holder, NOW)
    assert reclaim_reason(facts, 120) == "holder NotReady for over 120s"
    watched = witnessed(facts, entry, 5.0)
    assert not watched.expired
    assert watched.condition_age == 5.0
    assert reclaim_reason(watched, 120) == ""
    assert reclaim_reason(witnessed(facts, entry, 121.0), 120) == "holder NotReady for over 120s"
