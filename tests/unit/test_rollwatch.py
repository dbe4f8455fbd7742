"""The demo's outside view of a roll: timelines, the cordon count, the end, the tables."""

from __future__ import annotations

import asyncio
import io
import json
import re
from typing import cast

import pytest
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.core_v1 import Node

from kured_testbed.demo import Following, LineView, RollFailed, live_table, summary
from kured_testbed.fleet import FleetConfig
from kured_testbed.rollwatch import Roll

INFO = (
    *("architecture", "containerRuntimeVersion", "kernelVersion", "kubeProxyVersion"),
    *("kubeletVersion", "machineID", "operatingSystem", "osImage", "systemUUID"),
)
LOCK = "weave.works/kured-node-lock"


def node(
    name: str,
    *,
    ready: bool = True,
    cordoned: bool = False,
    boot: str = "boot-1",
    phase: str | None = None,
    activity: str | None = None,
) -> Node:
    annotations: dict[str, str] = {}
    if phase:
        annotations["kured.dev/progress"] = json.dumps({"phase": phase})
    if activity:
        annotations["kured.dev/status"] = json.dumps({"rebootRequired": True, "activity": activity})
    raw = {
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"unschedulable": cordoned},
        "status": {
            "conditions": [{"type": "Ready", "status": str(ready)}],
            "nodeInfo": {"bootID": boot, **dict.fromkeys(INFO, "x")},
        },
    }
    return cast(Node, Node.from_dict(raw))


def daemonset(annotation: str | None) -> DaemonSet:
    template = {"spec": {"containers": [{"name": "kured", "image": "kured"}]}}
    raw = {
        "metadata": {"name": "kured", "annotations": {LOCK: annotation} if annotation else {}},
        "spec": {"selector": {}, "template": template},
    }
    return cast(DaemonSet, DaemonSet.from_dict(raw))


def lock(holder: str | None) -> DaemonSet:
    return daemonset(json.dumps({"nodeID": holder}) if holder else None)


def started(nodes: int = 2) -> Roll:
    roll = Roll(FleetConfig("r", nodes, zones=2))
    for name in roll.nodes:
        roll.see_node(node(name), 0.0)
    roll.see_lock("ADDED", lock(None), 0.0)
    assert roll.synced
    roll.begin(1.0)
    return roll


def reboot(roll: Roll, name: str, at: float) -> None:
    """One node's reboot as the cluster shows it, a second per step."""
    roll.see_lock("MODIFIED", lock(name), at)
    roll.see_node(node(name, cordoned=True, phase="draining"), at)
    roll.see_node(node(name, cordoned=True, ready=False, phase="rebooting"), at + 1)
    roll.see_node(node(name, cordoned=True, boot="boot-2", phase="rebooting"), at + 3)
    roll.see_node(node(name, boot="boot-2"), at + 4)
    roll.see_lock("MODIFIED", lock(None), at + 4.5)


def test_a_reboot_is_timed_step_by_step() -> None:
    roll = started()
    reboot(roll, "r-1", 2.0)
    line = roll.timelines["r-1"]
    assert (line.drain, line.reboot, line.back_ready, line.total) == (1.0, 2.0, 1.0, 4.0)
    assert line.reboots == 1
    assert not roll.finished


def test_the_roll_ends_when_every_node_is_back_and_the_lock_free() -> None:
    roll = started()
    reboot(roll, "r-1", 2.0)
    reboot(roll, "r-2", 10.0)
    assert roll.finished
    assert roll.wall_time == 13.5
    assert roll.reboots == 2
    assert roll.most_cordoned == 1


def test_nodes_cordoned_together_are_counted() -> None:
    roll = started(3)
    roll.see_node(node("r-1", cordoned=True), 2.0)
    roll.see_node(node("r-3", cordoned=True), 3.0)
    roll.see_node(node("r-1"), 4.0)
    assert roll.most_cordoned == 2


def test_a_restart_without_a_new_boot_id_is_not_back_up() -> None:
    roll = started()
    roll.see_node(node("r-1", cordoned=True), 2.0)
    roll.see_node(node("r-1", cordoned=True, ready=False), 3.0)
    roll.see_node(node("r-1", cordoned=True), 4.0)
    roll.see_node(node("r-1"), 5.0)
    line = roll.timelines["r-1"]
    assert line.up is None
    assert not line.done


def test_labels_follow_the_cluster_then_kured() -> None:
    roll = started()
    seen = []
    for update in (
        node("r-1", activity="waiting-for-lock"),
        node("r-1", cordoned=True, phase="draining"),
        node("r-1", cordoned=True, ready=False, phase="rebooting"),
        node("r-1", cordoned=True, boot="boot-2", phase="rebooting"),
        node("r-1", boot="boot-2", phase="gating"),
        node("r-1", boot="boot-2", activity="idle"),
    ):
        roll.see_node(update, 2.0)
        seen.append(roll.label("r-1"))
    assert seen == ["waiting-for-lock", "draining", "down", "back up", "gating", "done"]


def test_an_unreadable_lock_is_shown_as_held() -> None:
    roll = started()
    roll.see_lock("MODIFIED", daemonset("{"), 2.0)
    assert roll.holders and roll.holders[0].startswith("<")
    roll.see_lock("DELETED", lock("r-1"), 3.0)
    assert roll.holders == ()


def test_the_tables() -> None:
    roll = started()
    reboot(roll, "r-1", 2.0)
    reboot(roll, "r-2", 10.0)
    final = summary(roll)
    header = ["NODE", "ZONE", "DRAIN (s)", "REBOOT (s)", "BACK-READY (s)", "TOTAL (s)"]
    assert re.split(r" {2,}", final[0]) == header
    assert final[1].split() == ["r-1", "zone-a", "1.0", "2.0", "1.0", "4.0"]
    assert "13.5 s wall time" in final[-1]
    assert "reboots: 2" in final[-1]
    live = live_table(roll, 20.0)
    assert live[2].split() == ["r-1", "zone-a", "done", "no", "yes", "14.0"]  # done since 6.0


def test_the_line_view_prints_changes_only() -> None:
    roll = started()
    out = io.StringIO()
    view = LineView(out)
    view.show(roll, 1.0)
    view.show(roll, 1.5)
    roll.see_lock("MODIFIED", lock("r-2"), 2.0)
    roll.see_node(node("r-2", cordoned=True, phase="draining"), 2.0)
    view.show(roll, 2.0)
    lines = out.getvalue().splitlines()
    assert [line.split() for line in lines] == [
        ["0.0", "s", "r-1", "idle"],
        ["0.0", "s", "r-2", "idle"],
        ["0.0", "s", "lock:", "free"],
        ["1.0", "s", "r-2", "draining"],
        ["1.0", "s", "lock:", "r-2"],
    ]


async def test_a_roll_past_its_deadline_fails_in_one_line() -> None:
    roll = started()
    roll.see_lock("MODIFIED", lock("r-2"), 2.0)
    roll.see_node(node("r-2", cordoned=True, phase="draining"), 2.0)
    following = Following(roll, LineView(io.StringIO()), asyncio.Event(), lambda: None, 300)
    following.deadline = 0.0  # long past
    with pytest.raises(RollFailed) as failed:
        await following.until(lambda: roll.finished)
    assert str(failed.value) == (
        "the roll did not finish within 300 s: r-1 idle, r-2 draining; lock: r-2"
    )


def test_each_lock_groups_holders_count() -> None:
    roll = started()
    group = json.dumps({"maxOwners": 2, "locks": [{"nodeID": "r-2"}]})
    ds = daemonset(json.dumps({"nodeID": "r-1"}))
    assert ds.metadata is not None and ds.metadata.annotations is not None
    ds.metadata.annotations |= {f"{LOCK}-zone-b": group, "other/annotation": "x"}
    roll.see_lock("MODIFIED", ds, 2.0)
    assert roll.holders == ("r-1", "r-2")
