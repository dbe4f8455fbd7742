"""kuredctl's reading of what the daemon records: status, pauses, the lock, Events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest

from kured.ctl.locks import (
    LockFormat,
    describe_leases,
    describe_lock,
    summarize_leases,
    summarize_lock,
)
from kured.ctl.model import AgentStatus, build_status, history, rfc3339
from kured.kube import DaemonSet, Event, Lease, Node
from kured.policy import PauseNote, Phase

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
ANNOTATION = "weave.works/kured-node-lock"

SINGLE = (
    '{"nodeID":"n1","metadata":{"unschedulable":false},'
    '"created":"2026-11-22T02:59:00.123456789Z","TTL":0}'
)
SINGLE_EXPIRED = (
    '{"nodeID":"n2","metadata":{"unschedulable":true},'
    '"created":"2026-11-22T02:00:00Z","TTL":1800000000000}'
)
MULTI = (
    '{"maxOwners":3,"locks":[{"nodeID":"n1","metadata":{"unschedulable":false},'
    '"created":"2026-11-22T02:59:00.5Z","TTL":0},'
    '{"nodeID":"gone","metadata":{"unschedulable":false},'
    '"created":"2026-11-22T01:00:00Z","TTL":0}]}'
)
HAND_SET = '{"nodeID":"manual"}'


def status_json(**overrides: Any) -> str:
    value = {
        "rebootRequired": True,
        "reason": "sentinel present",
        "windowOpen": True,
        "blockedBy": "",
        "activity": "waiting-for-lock",
        "lastReboot": "",
    }
    return json.dumps(value | overrides)


def node(name: str, annotations: dict[str, str] | None = None, cordoned: bool = False) -> Node:
    raw = {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"unschedulable": cordoned},
    }
    return cast(Node, Node.from_dict(raw))


def daemonset(annotations: dict[str, str] | None = None) -> DaemonSet:
    labels = {"name": "kured"}
    raw = {
        "metadata": {"name": "kured", "namespace": "kube-system", "annotations": annotations},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "kured", "image": "kured"}]},
            },
        },
    }
    return cast(DaemonSet, DaemonSet.from_dict(raw))


# -- kured.dev/status ---------------------------------------------------------------------


def test_agent_status_reads_every_field() -> None:
    text = status_json(blockedBy="pod x", lastReboot="2026-11-21T02:00:00Z", windowOpen=False)
    assert AgentStatus.parse(text) == AgentStatus(
        reboot_required=True,
        reason="sentinel present",
        window_open=False,
        blocked_by="pod x",
        activity="waiting-for-lock",
        last_reboot="2026-11-21T02:00:00Z",
    )


@pytest.mark.parametrize(
    "text",
    [None, "", "not json", "[]", '"text"', "{}", '{"rebootRequired": "yes"}'],
)
def test_agent_status_is_unknown_when_missing_or_unreadable(text: str | None) -> None:
    assert AgentStatus.parse(text) is None


def test_agent_status_tolerates_missing_and_mistyped_fields() -> None:
    parsed = AgentStatus.parse('{"rebootRequired": false, "reason": 3, "windowOpen": "yes"}')
    assert parsed == AgentStatus(reboot_required=False)


# -- kured.dev/paused ---------------------------------------------------------------------


def test_pause_note_round_trips_as_json() -> None:
    note = PauseNote(by="alice", at="2026-11-22T03:00:00Z", reason="kernel rollout on hold")
    assert json.loads(note.render()) == {
        "by": "alice",
        "at": "2026-11-22T03:00:00Z",
        "reason": "kernel rollout on hold",
    }
    assert PauseNote.parse(note.render()) == note


@pytest.mark.parametrize("text", ["disk swap", "", "42", "[1]"])
def test_pause_note_reads_free_text_as_the_reason(text: str) -> None:
    assert PauseNote.parse(text) == PauseNote(reason=text)


@pytest.mark.parametrize(
    ("note", "described"),
    [
        (
            PauseNote("alice", "2026-11-22T03:00:00Z", "why"),
            "by alice at 2026-11-22T03:00:00Z: why",
        ),
        (PauseNote("alice", "", ""), "by alice"),
        (PauseNote("", "", "disk swap"), "disk swap"),
        (PauseNote("", "2026-11-22T03:00:00Z", ""), "at 2026-11-22T03:00:00Z"),
        (PauseNote(), "(no details)"),
    ],
)
def test_pause_note_describes_what_it_knows(note: PauseNote, described: str) -> None:
    assert note.describe() == described


def test_rfc3339_is_utc_to_the_second() -> None:
    east = datetime(2026, 11, 22, 7, 0, 1, 999999, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(east) == "2026-11-22T05:00:01Z"


# -- the lock -----------------------------------------------------------------------------


def test_single_lock() -> None:
    lock = summarize_lock(ANNOTATION, SINGLE, NOW, {"n1", "n2"})
    assert (lock.format, lock.slots, lock.unreadable) == (LockFormat.SINGLE, 1, "")
    (holder,) = lock.holders
    assert holder.node_id == "n1"
    assert holder.created == datetime(2026, 11, 22, 2, 59, 0, 123456, tzinfo=UTC)
    assert (holder.expired, holder.is_node, holder.hand_set) == (False, True, False)
    assert lock.state_of("n1") == "held"
    assert lock.state_of("n2") == ""
    assert describe_lock(lock) == "held by n1 (single-owner format)"


def test_expired_entry_still_holds_its_slot() -> None:
    lock = summarize_lock(ANNOTATION, SINGLE_EXPIRED, NOW, {"n2"})
    (holder,) = lock.holders
    assert holder.expired
    assert holder.ttl == timedelta(minutes=30)
    assert holder.unschedulable_before
    assert lock.state_of("n2") == "expired"
    assert describe_lock(lock) == "held by n2 (TTL 30m0s, expired) (single-owner format)"


def test_multi_lock_keeps_max_owners_and_spots_strangers() -> None:
    lock = summarize_lock(ANNOTATION, MULTI, NOW, {"n1"})
    assert (lock.format, lock.slots) == (LockFormat.MULTI, 3)
    assert [(h.node_id, h.is_node) for h in lock.holders] == [("n1", True), ("gone", False)]
    assert describe_lock(lock) == "held by n1, gone (not a node) (2 of 3 slots, multi-owner format)"


def test_hand_set_lock() -> None:
    lock = summarize_lock(ANNOTATION, HAND_SET, NOW, {"n1"})
    (holder,) = lock.holders
    assert holder.hand_set and not holder.is_node and not holder.expired
    assert describe_lock(lock) == "held by manual (set by hand, not a node) (single-owner format)"


def test_hand_set_lock_with_a_ttl_shows_the_ttl_and_has_not_expired() -> None:
    """No creation time to count the TTL from, and the daemon never reclaims a hand-set
    entry: it read as expired (kuredctl's answer was not what the daemon does)."""
    lock = summarize_lock(ANNOTATION, '{"nodeID":"manual","TTL":3600000000000}', NOW, {"n1"})
    (holder,) = lock.holders
    assert (holder.hand_set, holder.expired, holder.ttl) == (True, False, timedelta(hours=1))
    assert lock.state_of("manual") == "held"
    assert describe_lock(lock) == (
        "held by manual (set by hand, not a node, TTL 1h0m0s) (single-owner format)"
    )


def test_status_shows_every_lock_groups_holders() -> None:
    """--lock-group-label keeps one annotation per group (<annotation>-<group>); only the
    base one was read, so group holders showed as holding nothing."""
    zone_a = MULTI.replace('"gone"', '"n3"')
    ds = daemonset(
        {
            f"{ANNOTATION}-zone-b": SINGLE_EXPIRED,
            f"{ANNOTATION}-zone-a": zone_a,
            "weave.works/kured-node-locked": SINGLE,  # another key, not a group of ours
        }
    )
    nodes = [node("n1"), node("n2"), node("n3"), node("n4")]
    report = build_status(ds, nodes, ANNOTATION, NOW)
    assert report.lock.holders == ()
    assert [(g.group, g.annotation) for g in report.group_locks] == [
        ("zone-a", f"{ANNOTATION}-zone-a"),
        ("zone-b", f"{ANNOTATION}-zone-b"),
    ]
    assert [describe_lock(g) for g in report.group_locks] == [
        "held by n1, n3 (2 of 3 slots, multi-owner format)",
        "held by n2 (TTL 30m0s, expired) (single-owner format)",
    ]
    assert [(row.name, row.lock) for row in report.nodes] == [
        ("n1", "held"),
        ("n2", "expired"),
        ("n3", "held"),
        ("n4", ""),
    ]


def test_unknown_node_list_calls_no_holder_a_stranger() -> None:
    lock = summarize_lock(ANNOTATION, MULTI, NOW, None)
    assert all(h.is_node for h in lock.holders)


@pytest.mark.parametrize("text", [None, "", "  "])
def test_no_annotation_is_free(text: str | None) -> None:
    lock = summarize_lock(ANNOTATION, text, NOW, set())
    assert (lock.format, lock.slots, lock.holders) == (LockFormat.NONE, 1, ())
    assert describe_lock(lock) == "free"


def test_empty_multi_lock_is_free_but_keeps_its_format() -> None:
    lock = summarize_lock(ANNOTATION, '{"maxOwners":2,"locks":[]}', NOW, set())
    assert (lock.format, lock.slots, lock.holders) == (LockFormat.MULTI, 2, ())
    assert describe_lock(lock) == "free (0 of 2 slots, multi-owner format)"


def test_single_entry_without_holder_is_free() -> None:
    lock = summarize_lock(ANNOTATION, '{"nodeID":""}', NOW, set())
    assert lock.holders == ()
    assert describe_lock(lock) == "free (single-owner format)"


@pytest.mark.parametrize(
    ("text", "slots"),
    [
        ('{"locks":[{"nodeID":"a"},{"nodeID":"b"},{"nodeID":"c"}]}', 3),
        ('{"locks":[{"nodeID":"a"}]}', 2),
        ('{"maxOwners":"two","locks":[]}', 2),
        ('{"maxOwners":0,"locks":[]}', 2),
    ],
)
def test_multi_lock_without_usable_max_owners_stays_multi(text: str, slots: int) -> None:
    lock = summarize_lock(ANNOTATION, text, NOW, set())
    assert (lock.format, lock.slots) == (LockFormat.MULTI, slots)


@pytest.mark.parametrize(
    "text",
    ["not json", "[1]", '{"locks": "n1"}', '{"nodeID": "n1", "TTL": "soon"}'],
)
def test_unreadable_lock_is_reported_not_guessed(text: str) -> None:
    lock = summarize_lock(ANNOTATION, text, NOW, {"n1"})
    assert lock.unreadable
    assert lock.holders == ()
    assert describe_lock(lock).startswith("unreadable (")


# -- status -------------------------------------------------------------------------------


def test_status_rows_follow_the_recorded_annotations() -> None:
    nodes = [
        node("n2", {"kured.dev/status": status_json(activity="draining")}, cordoned=True),
        node(
            "n1",
            {
                "kured.dev/status": status_json(rebootRequired=False, activity="idle"),
                "kured.dev/paused": "disk swap",
            },
        ),
        node("n3"),
    ]
    ds = daemonset({ANNOTATION: SINGLE.replace('"n1"', '"n2"')})
    report = build_status(ds, nodes, ANNOTATION, NOW)
    assert (report.namespace, report.name, report.paused) == ("kube-system", "kured", None)
    assert [row.name for row in report.nodes] == ["n1", "n2", "n3"]
    n1, n2, n3 = report.nodes
    assert n1.status and not n1.status.reboot_required
    assert n1.paused == PauseNote(reason="disk swap")
    assert (n1.lock, n1.cordoned, n1.phase) == ("", False, "idle")
    assert (n2.lock, n2.cordoned, n2.phase) == ("held", True, "draining")
    assert (n3.status, n3.progress, n3.phase, n3.paused) == (None, None, "", None)


def test_status_phase_falls_back_to_progress() -> None:
    progress = '{"phase":"rebooting","boot_id":"b1","unschedulable_before":false,"since":""}'
    report = build_status(
        daemonset(), [node("n1", {"kured.dev/progress": progress})], ANNOTATION, NOW
    )
    (row,) = report.nodes
    assert (row.status, row.progress, row.phase) == (None, Phase.REBOOTING, "rebooting")


def test_status_activity_wins_over_progress() -> None:
    progress = '{"phase":"draining"}'
    annotations = {"kured.dev/progress": progress, "kured.dev/status": status_json()}
    (row,) = build_status(daemonset(), [node("n1", annotations)], ANNOTATION, NOW).nodes
    assert row.phase == "waiting-for-lock"


def test_status_lists_lock_holders_that_are_not_nodes() -> None:
    report = build_status(daemonset({ANNOTATION: MULTI}), [node("n1")], ANNOTATION, NOW)
    assert [(r.name, r.is_node, r.lock) for r in report.nodes] == [
        ("n1", True, "held"),
        ("gone", False, "held"),
    ]
    assert report.nodes[1].cordoned is None


def test_status_reads_the_cluster_wide_pause() -> None:
    note = PauseNote("bob", "2026-11-22T03:00:00Z", "freeze")
    report = build_status(daemonset({"kured.dev/paused": note.render()}), [], ANNOTATION, NOW)
    assert report.paused == note
    assert report.nodes == ()


def test_status_uses_the_configured_lock_annotation() -> None:
    ds = daemonset({"example.com/lock": SINGLE, ANNOTATION: MULTI})
    report = build_status(ds, [node("n1")], "example.com/lock", NOW)
    assert report.lock.annotation == "example.com/lock"
    assert report.lock.format is LockFormat.SINGLE


# -- lock Leases ----------------------------------------------------------------------------


def lease(name: str, holder: str = "", renewed: str | None = None, group: str = "") -> Lease:
    """A lock Lease as kured.lease writes it; without ``renewed`` as an operator sets one by
    hand (a holder, no renewTime, no duration) or as a release leaves it (no holder)."""
    spec: dict[str, Any] = {"holderIdentity": holder or None}
    if renewed:
        spec |= {"renewTime": renewed, "leaseDurationSeconds": 60}
    labels = {"kured.dev/lock": "kured", "kured.dev/lock-group": group}
    return cast(
        Lease, Lease.from_dict({"metadata": {"name": name, "labels": labels}, "spec": spec})
    )


LEASES = [
    lease("kured-lock-zone-b-0", "manual"),
    lease("kured-lock-1"),
    lease("kured-lock-0", "n1", "2026-11-22T02:59:30.000000Z"),
    lease("kured-lock-zone-b-1", "n2", "2026-11-22T02:00:00.000000Z", group="zone-b"),
]


def test_no_lease_means_nothing_to_show() -> None:
    assert summarize_leases([], NOW, None) is None


def test_lease_holders_read_like_lock_entries() -> None:
    summary = summarize_leases(LEASES, NOW, {"n1", "n2"})
    assert summary is not None
    assert summary.count == 4
    held = [
        (h.lease, h.node_id, h.group, h.hand_set, h.expired, h.is_node) for h in summary.holders
    ]
    assert held == [
        ("kured-lock-0", "n1", "", False, False, True),
        ("kured-lock-zone-b-0", "manual", "", True, False, False),
        ("kured-lock-zone-b-1", "n2", "zone-b", False, True, True),
    ]
    assert describe_leases(summary) == (
        "held by n1, manual (set by hand, not a node), n2 (expired) (3 of 4 Leases)"
    )


def test_free_and_unreadable_leases() -> None:
    free = summarize_leases([lease("kured-lock-0")], NOW, None)
    assert free is not None
    assert describe_leases(free) == "free (0 of 1 Leases)"
    forbidden = summarize_leases([], NOW, None, "permission denied: leases is forbidden")
    assert forbidden is not None
    assert describe_leases(forbidden) == "unreadable (permission denied: leases is forbidden)"


def test_status_counts_lease_holders_as_lock_holders() -> None:
    report = build_status(daemonset(), [node("n1"), node("n3")], ANNOTATION, NOW, leases=LEASES)
    assert report.lock.holders == ()
    assert report.leases is not None
    assert [(r.name, r.is_node, r.lock) for r in report.nodes] == [
        ("n1", True, "held"),
        ("n3", True, ""),
        ("manual", False, "held"),
        ("n2", False, "expired"),
    ]
    assert build_status(daemonset(), [], ANNOTATION, NOW).leases is None


# -- history ------------------------------------------------------------------------------


def event(
    name: str,
    reason: str,
    *,
    last: str | None = None,
    version: str = "",
    count: int | None = None,
    **times: str,
) -> Event:
    raw = {
        "metadata": {"name": name, "namespace": "default", "resourceVersion": version}
        | ({"creationTimestamp": times["created"]} if "created" in times else {}),
        "involvedObject": {"kind": "Node", "name": name.split(".", maxsplit=1)[0]},
        "reason": reason,
        "message": f"{reason} message",
        "type": "Normal",
        "source": {"component": "kured"},
        "lastTimestamp": last,
        "eventTime": times.get("event_time"),
        "firstTimestamp": times.get("first"),
        "count": count,
    }
    return cast(Event, Event.from_dict(raw))


def test_history_is_oldest_first() -> None:
    events = [
        event("n2.b", "Rebooting", last="2026-11-22T02:10:00Z"),
        event("n1.a", "LockAcquired", last="2026-11-22T02:00:00Z"),
        event("n1.c", "Rebooted", last="2026-11-22T02:20:00Z", count=2),
    ]
    entries = history(events, None)
    assert [(e.node, e.reason) for e in entries] == [
        ("n1", "LockAcquired"),
        ("n2", "Rebooting"),
        ("n1", "Rebooted"),
    ]
    assert entries[0].time == datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    assert (entries[2].count, entries[0].count) == (2, 1)
    assert entries[0].message == "LockAcquired message"


def test_history_breaks_same_second_ties_by_resource_version() -> None:
    second = "2026-11-22T02:00:00Z"
    events = [
        event("n1.zz", "LockAcquired", last=second, version="100"),
        event("n1.aa", "Draining", last=second, version="101"),
        event("n1.mm", "Rebooting", last=second, version="99"),
    ]
    assert [e.reason for e in history(events, None)] == ["Rebooting", "LockAcquired", "Draining"]


def test_history_takes_the_best_timestamp_available() -> None:
    events = [
        event("n1.a", "A", event_time="2026-11-22T02:00:03.5Z"),
        event("n1.b", "B", first="2026-11-22T02:00:02Z"),
        event("n1.c", "C", created="2026-11-22T02:00:01Z"),
        event("n1.d", "D"),
    ]
    entries = history(events, None)
    assert [e.reason for e in entries] == ["D", "C", "B", "A"]
    assert entries[0].time is None
    assert entries[-1].time == datetime(2026, 11, 22, 2, 0, 3, 500000, tzinfo=UTC)


def test_history_limit_keeps_the_most_recent() -> None:
    events = [event(f"n1.{i}", f"R{i}", last=f"2026-11-22T02:00:0{i}Z") for i in range(5)]
    assert [e.reason for e in history(events, 2)] == ["R3", "R4"]
    assert [e.reason for e in history(events, 10)] == ["R0", "R1", "R2", "R3", "R4"]
