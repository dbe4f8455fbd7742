"""The chaos checker's rules, on synthetic audit logs and node histories."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kured_testbed.audit_check import (
    FinalNode,
    NodeWrite,
    Reboot,
    Roll,
    check,
    deletions,
    kured_cordons,
    most_at_once,
    node_writes,
    timestamp,
)
from kured_testbed.chaos import AuditMark

KURED = "system:serviceaccount:f1-kured:kured"
ADMIN = "sandbox-admin"
NODES = ("n1", "n2", "n3")
_ids = itertools.count()


def at(seconds: float) -> str:
    return datetime.fromtimestamp(1_800_000_000 + seconds, UTC).isoformat().replace("+00:00", "Z")


def t(seconds: float) -> float:
    return timestamp(at(seconds))


def events(
    node: str,
    body: Any,
    received: float,
    *,
    done: float | None = None,
    code: int = 200,
    user: str = KURED,
    verb: str = "patch",
    subresource: str = "",
) -> list[dict[str, Any]]:
    """A node write's audit events: RequestReceived, and ResponseComplete unless done is None."""
    ref = {"resource": "nodes", "name": node, "apiVersion": "v1"}
    if subresource:
        ref["subresource"] = subresource
    first = {
        "auditID": f"id-{next(_ids)}",
        "stage": "RequestReceived",
        "verb": verb,
        "user": {"username": user},
        "objectRef": ref,
        "requestReceivedTimestamp": at(received),
        "stageTimestamp": at(received),
    }
    if done is None:
        return [first]
    answer = first | {
        "stage": "ResponseComplete",
        "requestObject": body,
        "responseStatus": {"code": code},
        "stageTimestamp": at(done),
    }
    return [first, answer]


CORDON = {"spec": {"unschedulable": True}}
UNCORDON = {"spec": {"unschedulable": None}}


def write(
    unschedulable: bool | None, received: float, done: float | None, code: int = 200
) -> NodeWrite:
    return NodeWrite(
        "n1", KURED, unschedulable, t(received), None if done is None else t(done), code
    )


# --- reading the audit log -------------------------------------------------------------------


def test_writes_pair_the_stages_and_say_what_they_did_to_the_spec() -> None:
    log = [
        *events("n1", CORDON, 10, done=10.01),
        *events("n1", {"metadata": {"annotations": {"a": "b"}}}, 11, done=11.01),
        *events("n1", UNCORDON, 20, done=20.02),
        *events("n9", CORDON, 12, done=12.01),  # another fleet's node
        *events("n1", {"status": {}}, 13, done=13.01, subresource="status"),
    ]
    writes = node_writes(log, NODES)
    assert [(w.unschedulable, w.received, w.done, w.code) for w in writes] == [
        (True, t(10), t(10.01), 200),
        (None, t(11), t(11.01), 200),
        (False, t(20), t(20.02), 200),
    ]
    assert all(w.applied and not w.maybe for w in writes)


def test_an_unanswered_write_is_kept_with_unknown_content() -> None:
    [write] = node_writes(events("n2", None, 5), NODES)
    assert write.unschedulable is None
    assert write.maybe
    assert not write.applied


def test_json_patches_and_updates_are_understood() -> None:
    json_patch = [{"op": "replace", "path": "/spec/unschedulable", "value": True}]
    update = {"metadata": {"name": "n1"}, "spec": {}}  # a whole Node: absent = schedulable
    log = [
        *events("n1", json_patch, 1, done=1.1),
        *events("n1", update, 2, done=2.1, verb="update"),
    ]
    assert [w.unschedulable for w in node_writes(log, NODES)] == [True, False]


def test_server_errors_are_of_unknown_outcome_but_rejections_are_not() -> None:
    log = [
        *events("n1", CORDON, 1, done=1.1, code=500),
        *events("n1", CORDON, 2, done=2.1, code=409),
    ]
    server_error, conflict = node_writes(log, NODES)
    assert server_error.maybe
    assert not conflict.maybe
    assert not conflict.applied


def test_deletions() -> None:
    log = [
        {
            "auditID": "d1",
            "stage": "ResponseComplete",
            "verb": "delete",
            "objectRef": {"resource": "nodes", "name": "n3"},
            "responseStatus": {"code": 200},
            "stageTimestamp": at(42),
        },
        {
            "auditID": "d2",
            "stage": "ResponseComplete",
            "verb": "delete",
            "objectRef": {"resource": "nodes", "name": "n2"},
            "responseStatus": {"code": 404},
            "stageTimestamp": at(43),
        },
    ]
    assert deletions(log, NODES) == {"n3": t(42)}


# --- cordon intervals --------------------------------------------------------------------------


def test_a_cordon_counts_from_its_arrival_to_its_uncordons_answer() -> None:
    spans, unexplained = kured_cordons([write(True, 1, 1.1), write(False, 9, 9.1)], True, t(99))
    assert spans == [(t(1), t(9.1))]
    assert unexplained == []


def test_repeated_cordons_and_rejected_writes_do_not_split_an_interval() -> None:
    writes = [write(True, 1, 1.1), write(True, 3, 3.1), write(False, 5, 5.1, code=409)]
    writes.append(write(False, 9, 9.1))
    assert kured_cordons(writes, True, t(99))[0] == [(t(1), t(9.1))]


def test_an_uncordon_without_cordon_reveals_an_unanswered_cordon() -> None:
    writes = [write(None, 1, None), write(False, 9, 9.1)]
    spans, unexplained = kured_cordons(writes, True, t(99))
    assert spans == [(t(1), t(9.1))]
    assert unexplained == []


def test_an_uncordon_nothing_explains_is_reported() -> None:
    spans, unexplained = kured_cordons([write(False, 9, 9.1)], True, t(99))
    assert spans == [(t(9), t(9.1))]
    assert unexplained == ["uncordoned without a cordon on record"]


def test_a_cordon_of_unknown_outcome_that_nothing_undid_never_applied() -> None:
    assert kured_cordons([write(True, 4, 4.1, code=503)], True, t(99))[0] == []
    assert kured_cordons([write(None, 4, None)], True, t(99))[0] == []


def test_a_cordon_undone_by_an_unanswered_uncordon_ends_at_the_next_answer() -> None:
    writes = [write(True, 1, 1.1), write(None, 5, None), write(None, 6, None)]
    assert kured_cordons(writes, True, t(99))[0] == [(t(1), t(99))]
    moved_on = [*writes, write(None, 8, 8.1)]  # an annotation patch, answered
    assert kured_cordons(moved_on, True, t(99))[0] == [(t(1), t(8))]


def test_a_node_left_cordoned_stays_unavailable_forever() -> None:
    [(start, end)] = kured_cordons([write(True, 1, 1.1)], False, t(99))[0]
    assert start == t(1)
    assert end == float("inf")


def test_touching_intervals_do_not_overlap() -> None:
    assert most_at_once({"a": [(1, 2)], "b": [(2, 3)]})[0] == 1
    assert most_at_once({"a": [(1, 2), (1.5, 4)], "b": [(3, 5)]})[:2] == (2, 3)


# --- whole rolls -------------------------------------------------------------------------------


def clean_roll() -> Roll:
    """n1 then n2 then n3, one at a time: cordon, reboot, uncordon."""
    log: list[dict[str, Any]] = []
    reboots = {}
    for i, node in enumerate(NODES):
        base = 10 + 20 * i
        log += events(node, CORDON, base, done=base + 0.1)
        log += events(node, UNCORDON, base + 10, done=base + 10.1)
        reboots[node] = [Reboot(t(base + 4), t(base + 6))]
    return Roll(
        nodes=NODES,
        kured_user=KURED,
        concurrency=1,
        triggered=dict.fromkeys(NODES, t(0)),
        pre_cordoned=frozenset(),
        reboots=reboots,
        writes=node_writes(log, NODES),
        deleted={},
        final={node: FinalNode(unschedulable=False, progress=False) for node in NODES},
        lock_holders=(),
        end=t(100),
    )


def test_a_clean_roll_passes() -> None:
    verdict = check(clean_roll())
    assert verdict.violations == ()
    assert verdict.stuck == ()
    assert verdict.most_unavailable == 1


def test_two_nodes_down_at_once_is_a_violation() -> None:
    roll = clean_roll()
    roll = replace(roll, reboots={**roll.reboots, "n3": [Reboot(t(15), t(16))]})
    violations = check(roll).violations
    assert any("2 nodes unavailable for reboot at once" in v and "n1, n3" in v for v in violations)
    assert "n3 rebooted while not cordoned by kured" in violations


def test_each_lock_group_has_its_own_slots() -> None:
    roll = clean_roll()
    roll = replace(roll, reboots={**roll.reboots, "n3": [Reboot(t(15), t(16))]})
    apart = replace(roll, groups={"n1": "zone-a", "n2": "zone-a", "n3": "zone-b"})
    assert not any("at once" in v for v in check(apart).violations)
    assert check(apart).most_unavailable == 2  # over the whole fleet
    together = replace(roll, groups={"n1": "zone-a", "n2": "zone-b", "n3": "zone-a"})
    assert any("at once in group zone-a" in v for v in check(together).violations)


def test_a_second_reboot_for_one_sentinel_is_a_violation() -> None:
    roll = clean_roll()
    roll = replace(
        roll, reboots={**roll.reboots, "n1": [Reboot(t(14), t(15)), Reboot(t(16), t(17))]}
    )
    assert "n1 rebooted 2 times for one sentinel" in check(roll).violations


def test_reboots_before_the_sentinel_do_not_count() -> None:
    roll = clean_roll()
    roll = replace(
        roll, reboots={**roll.reboots, "n1": [Reboot(t(-9), t(-8)), *roll.reboots["n1"]]}
    )
    assert check(roll).violations == ()


def test_end_state_violations_and_stuck_nodes() -> None:
    roll = replace(
        clean_roll(),
        reboots={"n1": clean_roll().reboots["n1"]},
        final={
            "n1": FinalNode(unschedulable=True, progress=False),
            "n2": FinalNode(unschedulable=False, progress=True),
            "n3": FinalNode(unschedulable=False, progress=False),
        },
        lock_holders=("n2",),
    )
    verdict = check(roll)
    assert "n1 left cordoned" in verdict.violations
    assert "lock still held at the end by n2" in verdict.violations
    assert verdict.stuck == ("n2", "n3")


def test_pre_cordoned_nodes_must_stay_untouched() -> None:
    roll = replace(clean_roll(), pre_cordoned=frozenset({"n2"}))
    violations = check(roll).violations
    assert "kured changed spec.unschedulable of pre-cordoned n2" in violations
    assert "pre-cordoned n2 is no longer cordoned" in violations


def test_a_pre_cordoned_node_counts_only_while_it_is_down() -> None:
    roll = clean_roll()
    log = events("n2", CORDON, 1, done=1.1)  # kured cordons it (again), never uncordons
    writes = [*(w for w in roll.writes if w.node != "n2"), *node_writes(log, NODES)]
    final = {**roll.final, "n2": FinalNode(unschedulable=True, progress=False)}
    roll = replace(roll, pre_cordoned=frozenset({"n2"}), writes=writes, final=final)
    verdict = check(roll)
    assert verdict.violations == ("kured changed spec.unschedulable of pre-cordoned n2",)
    assert verdict.most_unavailable == 1


def test_a_pre_cordoned_node_rebooted_by_kured_without_touching_it_passes() -> None:
    roll = clean_roll()
    writes = [w for w in roll.writes if w.node != "n2"]
    final = {**roll.final, "n2": FinalNode(unschedulable=True, progress=False)}
    roll = replace(roll, pre_cordoned=frozenset({"n2"}), writes=writes, final=final)
    assert check(roll).violations == ()


def test_a_deleted_node_counts_until_its_deletion_and_is_exempt_afterwards() -> None:
    roll = clean_roll()
    log = events("n1", CORDON, 10, done=10.1)  # deleted at 12 while cordoned, never back
    writes = [*node_writes(log, NODES), *(w for w in roll.writes if w.node != "n1")]
    final = {n: f for n, f in roll.final.items() if n != "n1"}
    roll = replace(
        roll, writes=writes, final=final, deleted={"n1": t(12)}, reboots={**roll.reboots, "n1": []}
    )
    # n2's cordon starts at 30: n1's open cordon ended with its Node at 12.
    verdict = check(roll)
    assert verdict.violations == ()
    assert verdict.stuck == ()


def test_the_audit_log_since_a_mark_survives_its_rotation(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text('{"n": 1}\n')
    mark = AuditMark.of(log)
    with log.open("a") as out:
        out.write('{"n": 2}\n')
    log.rename(tmp_path / "audit-2026-11-22T03-50-55.859.log")  # what the API server does
    log.write_text('{"n": 3}\n{"n": 4')  # the last line half-written
    assert [event["n"] for event in mark.events_since(log)] == [2, 3]
