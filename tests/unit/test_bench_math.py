"""The benchmark's arithmetic: phases from watch events, makespan against its limit, rates."""

from __future__ import annotations

import json
import math
from typing import Any, cast

import pytest
from lightkube.resources.core_v1 import Node

from kured_testbed.benchmath import (
    ApiCounters,
    IncompleteRoll,
    NodePhases,
    Window,
    api_counters,
    audit_requests,
    distribution,
    growth,
    handoffs,
    node_phases,
    per_node_hour,
    percentile,
    requests_total,
    roll_figures,
)
from kured_testbed.fleet import FleetConfig
from kured_testbed.rollwatch import Roll

INFO = (
    *("architecture", "containerRuntimeVersion", "kernelVersion", "kubeProxyVersion"),
    *("kubeletVersion", "machineID", "operatingSystem", "osImage", "systemUUID"),
)


def node(name: str, *, ready: bool = True, cordoned: bool = False, boot: str = "a") -> Node:
    raw = {
        "metadata": {"name": name},
        "spec": {"unschedulable": cordoned},
        "status": {
            "conditions": [{"type": "Ready", "status": str(ready)}],
            "nodeInfo": {"bootID": boot, **dict.fromkeys(INFO, "x")},
        },
    }
    return cast(Node, Node.from_dict(raw))


def reboot(roll: Roll, name: str, times: tuple[float, float, float, float]) -> None:
    """Feed one node's reboot to roll as its watch would (boot id a → b): cordoned, down,
    up, uncordoned at the given times."""
    cordon, down, up, uncordon = times
    roll.see_node(node(name, cordoned=True), cordon)
    roll.see_node(node(name, ready=False, cordoned=True), down)
    roll.see_node(node(name, cordoned=True, boot="b"), up)
    roll.see_node(node(name, boot="b"), uncordon)


def test_phases_come_from_the_node_watch_relative_to_the_trigger() -> None:
    roll = Roll(FleetConfig("f", 2))
    for name in ("f-1", "f-2"):
        roll.see_node(node(name), 0.0)
    roll.begin(100.0)
    reboot(roll, "f-2", (101.0, 103.5, 108.5, 109.0))
    reboot(roll, "f-1", (109.2, 111.2, 116.2, 116.5))
    phases = node_phases(roll.timelines, 100.0)
    assert [p.node for p in phases] == ["f-2", "f-1"]  # in the order they were cordoned
    assert phases[0] == NodePhases("f-2", 1.0, 3.5, 8.5, 9.0)
    assert (phases[1].drain, phases[1].reboot) == pytest.approx((2.0, 5.0))
    assert phases[1].ready == pytest.approx(0.3)


def test_a_node_not_seen_through_its_whole_reboot_is_an_error() -> None:
    roll = Roll(FleetConfig("f", 1))
    roll.see_node(node("f-1"), 0.0)
    roll.see_node(node("f-1", cordoned=True), 1.0)
    roll.see_node(node("f-1", ready=False, cordoned=True), 2.0)
    with pytest.raises(IncompleteRoll, match="f-1"):
        node_phases(roll.timelines, 0.0)


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_distribution_gives_median_p95_and_the_samples() -> None:
    assert distribution([1.0, 2.0, 3.0]) == {
        "median": 2.0,
        "p95": 2.9,
        "samples": [1.0, 2.0, 3.0],
    }


def phases(*cycles: tuple[float, float]) -> list[NodePhases]:
    """Nodes cordoned and uncordoned at the given times (2 s drain, 5 s reboot)."""
    return [NodePhases(f"n{i}", c, c + 2, c + 7, u) for i, (c, u) in enumerate(cycles)]


def test_handoffs_pair_each_freed_slot_with_the_next_cordon() -> None:
    one_at_a_time = phases((1.0, 9.0), (9.5, 17.0), (17.25, 25.0))
    assert handoffs(one_at_a_time, 1) == pytest.approx([0.5, 0.25])
    two_slots = phases((1.0, 9.0), (1.0, 10.0), (9.5, 17.5), (10.5, 18.0))
    assert handoffs(two_slots, 2) == pytest.approx([0.5, 0.5])
    assert handoffs(two_slots, 4) == []


def test_roll_figures_compare_the_makespan_with_the_physical_limit() -> None:
    # Three nodes one at a time: cycles of 8, 8 and 13 s (the last drain waited 5 s more).
    rolled = [
        NodePhases("a", 1.0, 3.0, 8.0, 9.0),
        NodePhases("b", 9.5, 11.5, 16.5, 17.5),
        NodePhases("c", 18.0, 25.0, 30.0, 31.0),
    ]
    figures = roll_figures(rolled, 1, most_cordoned=1)
    assert figures.makespan == 31.0
    assert figures.first_cordon == 1.0
    assert (figures.drain, figures.reboot, figures.ready) == (2.0, 5.0, 1.0)
    assert figures.rounds == 3
    assert figures.limit == 24.0  # 3 × (2 + 5 + 1), medians
    assert figures.strict_limit == 21.0  # 3 × (2 + 5)
    assert figures.ratio == pytest.approx(31 / 24)
    assert figures.strict_ratio == pytest.approx(31 / 21)
    assert figures.mean_limit == pytest.approx(8 + 8 + 13)  # every node's cycle
    assert figures.mean_ratio == pytest.approx(31 / 29)
    assert figures.handoff == 0.5
    as_json = figures.to_json()
    assert as_json["ratio"] == round(31 / 24, 3)
    assert as_json["rounds"] == 3
    json.dumps(as_json)


def test_rounds_are_rounded_up() -> None:
    twelve = phases(*[(1.0, 9.0)] * 12)
    assert roll_figures(twelve, 5, 5).rounds == math.ceil(12 / 5)


METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",resource="nodes",verb="GET"} 10
apiserver_request_total{code="201",resource="events",verb="POST"} 2.5
apiserver_request_total{code="409",resource="daemonsets",verb="PUT"} 1
# HELP apiserver_request_duration_seconds Response latency.
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{verb="GET",le="+Inf"} 10
apiserver_request_duration_seconds_count{verb="GET"} 10
"""


def test_requests_total_sums_every_series_of_the_counter_only() -> None:
    assert requests_total(METRICS) == 13.5


def event(audit_id: str, user: str, at: str, stage: str = "ResponseComplete") -> dict[str, Any]:
    return {
        "auditID": audit_id,
        "stage": stage,
        "verb": "get" if audit_id != "w" else "watch",
        "user": {"username": user},
        "requestReceivedTimestamp": at,
        "objectRef": {
            "resource": "nodes",
            **({"subresource": "status"} if audit_id == "s" else {}),
        },
    }


def test_audit_requests_counts_one_users_requests_in_the_window_once_each() -> None:
    kured = "system:serviceaccount:ns:kured"
    events = [
        event("before", kured, "2026-01-01T00:00:09.999999Z"),
        event("w", kured, "2026-01-01T00:00:10Z", stage="ResponseStarted"),
        event("w", kured, "2026-01-01T00:00:10Z"),  # the same watch, completed
        event("g", kured, "2026-01-01T00:00:15Z"),
        event("s", kured, "2026-01-01T00:00:16Z"),
        event("other", "sandbox-admin", "2026-01-01T00:00:15Z"),
        event("after", kured, "2026-01-01T00:00:20Z"),
    ]
    start = 1767225610.0  # 2026-01-01T00:00:10Z
    counted = audit_requests(events, kured, start, start + 10)
    assert counted == {"watch nodes": 1, "get nodes": 1, "get nodes/status": 1}


def test_per_node_hour_scales_a_window() -> None:
    assert per_node_hour(10, nodes=2, seconds=1800) == 10.0


SCALE_METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",verb="GET"} 100
apiserver_request_total{code="409",verb="PUT"} 5
# HELP apiserver_watch_events_total [ALPHA] Number of events sent in watch clients
# TYPE apiserver_watch_events_total counter
apiserver_watch_events_total{group="",kind="Node",version="v1"} 40
apiserver_watch_events_total{group="apps",kind="DaemonSet",version="v1"} 2000
# HELP apiserver_watch_events_sizes [ALPHA] Watch event size distribution in bytes
# TYPE apiserver_watch_events_sizes histogram
apiserver_watch_events_sizes_bucket{group="apps",kind="DaemonSet",version="v1",le="+Inf"} 2000
apiserver_watch_events_sizes_count{group="apps",kind="DaemonSet",version="v1"} 2000
apiserver_watch_events_sizes_sum{group="apps",kind="DaemonSet",version="v1"} 9e6
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
"""


def test_api_counters_read_requests_watch_events_and_cpu_only() -> None:
    assert api_counters(SCALE_METRICS) == ApiCounters(
        requests=105, watch_events=2040, lock_watch_events=2000, cpu_seconds=12.5
    )


def test_a_window_above_the_baseline_takes_off_its_rate_over_the_window() -> None:
    baseline = Window(ApiCounters(60, 30, 0, 3), seconds=60)
    roll = Window(ApiCounters(1000, 5000, 4000, 20), seconds=120)
    above = roll.above(baseline)
    assert above == ApiCounters(880, 4940, 4000, 14)
    assert above.per(10) == {
        "requests": 88.0,
        "watch_events": 494.0,
        "lock_watch_events": 400.0,
        "cpu_seconds": 1.4,
    }


def test_growth_is_the_largest_fleet_over_the_smallest() -> None:
    assert growth({1000: 30.0, 100: 20.0, 500: 90.0}) == 1.5
    assert growth({100: 20.0}) is None
    assert growth({100: 0.0, 1000: 5.0}) is None
