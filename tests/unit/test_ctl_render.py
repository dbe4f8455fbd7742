"""kuredctl's tables and JSON documents."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

from kured.ctl.locks import Holder, LeaseSummary, LockFormat, LockSummary
from kured.ctl.model import AgentStatus, HistoryEntry, NodeRow, StatusReport
from kured.ctl.render import (
    history_json,
    history_text,
    status_json,
    status_text,
    table,
    yes_no,
)
from kured.policy import PauseNote, Phase

CREATED = datetime(2026, 11, 22, 2, 59, 0, 500000, tzinfo=UTC)
LOCK = LockSummary(
    annotation="weave.works/kured-node-lock",
    format=LockFormat.MULTI,
    slots=2,
    holders=(
        Holder("n2", CREATED, timedelta(minutes=30), False, True, False),
        Holder("manual", None, timedelta(0), False, False, False),
    ),
)
WAITING = AgentStatus(True, "sentinel", True, "", "waiting-for-lock", "")
DRAINING = AgentStatus(True, "sentinel", True, "", "draining", "2026-11-01T02:00:00Z")
REPORT = StatusReport(
    namespace="kube-system",
    name="kured",
    lock=LOCK,
    paused=PauseNote("alice", "2026-11-22T03:00:00Z", "freeze"),
    nodes=(
        NodeRow("n1", True, WAITING, None, "", False, PauseNote(reason="disk")),
        NodeRow("n2", True, DRAINING, Phase.DRAINING, "held", True, None),
        NodeRow("n3", True, AgentStatus(False, "", False, "pod db-0", "blocked"), cordoned=False),
        NodeRow("n4", True, None, None, "", False, None),
        NodeRow("manual", False, lock="held"),
    ),
)


def test_table_aligns_columns_and_marks_empty_cells() -> None:
    assert table(("A", "LONG HEADER"), [("x", ""), ("wider", "y")]).splitlines() == [
        "A       LONG HEADER",
        "x       -",
        "wider   y",
    ]


def test_table_flattens_control_characters() -> None:
    text = table(("MESSAGE",), [("line one\nline two\x1b[31m",)])
    assert text.splitlines()[1] == "line one line two [31m"


def test_table_with_no_rows_is_just_the_header() -> None:
    assert table(("A", "B"), []) == "A   B"


def test_yes_no() -> None:
    assert [yes_no(True), yes_no(False), yes_no(None)] == ["yes", "no", "-"]


def test_status_text() -> None:
    assert status_text(REPORT).splitlines() == [
        "DaemonSet:   kube-system/kured",
        "Lock:        held by n2 (TTL 30m0s), manual (set by hand, not a node)"
        " (2 of 2 slots, multi-owner format)",
        "Paused:      yes, by alice at 2026-11-22T03:00:00Z: freeze",
        "",
        "NODE     REBOOT   WINDOW   BLOCKED BY   LOCK   PHASE              LAST REBOOT"
        "            CORDONED   PAUSED",
        "n1       yes      open     -            -      waiting-for-lock   -"
        "                      no         yes",
        "n2       yes      open     -            held   draining           2026-11-01T02:00:00Z"
        "   yes        no",
        "n3       no       closed   pod db-0     -      blocked            -"
        "                      no         no",
        "n4       -        -        -            -      -                  -"
        "                      no         no",
        "manual   -        -        -            held   -                  -"
        "                      -          -",
    ]


def test_status_text_when_nothing_is_paused_or_held() -> None:
    report = StatusReport("ops", "kured", LockSummary("k", LockFormat.NONE, 1), None, ())
    assert status_text(report).splitlines()[:3] == [
        "DaemonSet:   ops/kured",
        "Lock:        free",
        "Paused:      no",
    ]


GROUP_LOCK = LockSummary(
    annotation="weave.works/kured-node-lock-zone-a",
    format=LockFormat.SINGLE,
    slots=1,
    holders=(Holder("n1", CREATED, timedelta(0), False, True, False),),
    group="zone-a",
)


def test_status_text_and_json_show_every_group_lock() -> None:
    report = StatusReport("ops", "kured", LockSummary("k", LockFormat.NONE, 1), None, ())
    grouped = dataclasses.replace(report, group_locks=(GROUP_LOCK,))
    assert status_text(grouped).splitlines()[:4] == [
        "DaemonSet:     ops/kured",
        "Lock:          free",
        "Lock zone-a:   held by n1 (single-owner format)",
        "Paused:        no",
    ]
    document = json.loads(status_json(grouped))
    assert [(g["group"], g["annotation"], g["format"]) for g in document["groupLocks"]] == [
        ("zone-a", "weave.works/kured-node-lock-zone-a", "single")
    ]
    assert [h["nodeID"] for h in document["groupLocks"][0]["holders"]] == ["n1"]
    assert json.loads(status_json(report))["groupLocks"] == []


def test_status_json_document() -> None:
    document = json.loads(status_json(REPORT))
    assert document["schemaVersion"] == 1
    assert document["daemonSet"] == {"namespace": "kube-system", "name": "kured"}
    assert document["paused"] == {"by": "alice", "at": "2026-11-22T03:00:00Z", "reason": "freeze"}
    assert document["lock"] == {
        "annotation": "weave.works/kured-node-lock",
        "format": "multi",
        "slots": 2,
        "unreadable": None,
        "holders": [
            {
                "nodeID": "n2",
                "created": "2026-11-22T02:59:00.5Z",
                "ttlSeconds": 1800,
                "expired": False,
                "isNode": True,
                "unschedulableBefore": False,
            },
            {
                "nodeID": "manual",
                "created": None,
                "ttlSeconds": 0,
                "expired": False,
                "isNode": False,
                "unschedulableBefore": False,
            },
        ],
    }
    nodes = {node["name"]: node for node in document["nodes"]}
    assert list(nodes) == ["n1", "n2", "n3", "n4", "manual"]
    assert nodes["n2"] == {
        "name": "n2",
        "isNode": True,
        "status": {
            "rebootRequired": True,
            "reason": "sentinel",
            "windowOpen": True,
            "blockedBy": "",
            "activity": "draining",
            "lastReboot": "2026-11-01T02:00:00Z",
        },
        "progress": "draining",
        "phase": "draining",
        "lock": "held",
        "cordoned": True,
        "paused": None,
    }
    assert nodes["n1"]["paused"] == {"by": "", "at": "", "reason": "disk"}
    assert nodes["n4"] == {
        "name": "n4",
        "isNode": True,
        "status": None,
        "progress": None,
        "phase": None,
        "lock": None,
        "cordoned": False,
        "paused": None,
    }
    assert nodes["manual"]["isNode"] is False
    assert nodes["manual"]["cordoned"] is None


def test_status_json_reports_an_unreadable_lock() -> None:
    lock = LockSummary("k", LockFormat.SINGLE, 1, unreadable="lock annotation is not JSON")
    document = json.loads(status_json(StatusReport("ns", "kured", lock, None, ())))
    assert document["lock"]["unreadable"] == "lock annotation is not JSON"
    assert document["lock"]["holders"] == []
    assert document["paused"] is None


LEASED = LeaseSummary(
    count=2,
    holders=(
        Holder("n2", CREATED, timedelta(seconds=60), False, True, True, "kured-lock-a-0", "a"),
    ),
)


def test_status_text_shows_the_lease_line_only_when_leases_exist() -> None:
    lock = LockSummary("k", LockFormat.NONE, 1)
    leased = StatusReport("ops", "kured", lock, None, (), LEASED)
    assert status_text(leased).splitlines()[:3] == [
        "DaemonSet:   ops/kured",
        "Lock:        free",
        "Leases:      held by n2 (1 of 2 Leases)",
    ]
    assert (
        status_text(StatusReport("ops", "kured", lock, None, ()))
        .splitlines()[2]
        .startswith("Paused:")
    )


def test_status_json_leases() -> None:
    lock = LockSummary("k", LockFormat.NONE, 1)
    document = json.loads(status_json(StatusReport("ns", "kured", lock, None, (), LEASED)))
    assert document["leases"] == {
        "count": 2,
        "unreadable": None,
        "holders": [
            {
                "lease": "kured-lock-a-0",
                "group": "a",
                "nodeID": "n2",
                "renewed": "2026-11-22T02:59:00.5Z",
                "ttlSeconds": 60,
                "expired": False,
                "isNode": True,
                "unschedulableBefore": True,
            }
        ],
    }
    assert json.loads(status_json(StatusReport("ns", "kured", lock, None, ())))["leases"] is None


ENTRIES = [
    HistoryEntry(
        datetime(2026, 11, 22, 2, 0, tzinfo=UTC), "n1", "LockAcquired", "took", "Normal", 1
    ),
    HistoryEntry(None, "n2", "DrainFailed", "pdb says no", "Warning", 3),
]


def test_history_text() -> None:
    assert history_text(ENTRIES).splitlines() == [
        "TIME                   NODE   REASON         MESSAGE",
        "2026-11-22T02:00:00Z   n1     LockAcquired   took",
        "-                      n2     DrainFailed    pdb says no (x3)",
    ]


def test_history_text_without_events() -> None:
    assert history_text([]) == "TIME   NODE   REASON   MESSAGE"


def test_history_json() -> None:
    assert json.loads(history_json(ENTRIES)) == {
        "schemaVersion": 1,
        "events": [
            {
                "time": "2026-11-22T02:00:00Z",
                "node": "n1",
                "reason": "LockAcquired",
                "message": "took",
                "type": "Normal",
                "count": 1,
            },
            {
                "time": None,
                "node": "n2",
                "reason": "DrainFailed",
                "message": "pdb says no",
                "type": "Warning",
                "count": 3,
            },
        ],
    }
