"""The lock annotation, read and written exactly as Go kured does."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kured.lockformat import (
    LockEntry,
    LockFormatError,
    LockRecord,
    format_go_time,
    group_annotation,
    group_slug,
    parse,
    parse_go_time,
    render,
)

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)

# Literal values in Go kured's format (as written by kured 1.23's daemonsetlock package).
GO_SINGLE = (
    '{"nodeID":"node-1","metadata":{"unschedulable":false},'
    '"created":"2026-11-22T02:59:00.123456789Z","TTL":0}'
)
GO_SINGLE_TTL = (
    '{"nodeID":"node-2","metadata":{"unschedulable":true},'
    '"created":"2026-11-22T02:00:00Z","TTL":1800000000000}'
)
GO_MULTI = (
    '{"maxOwners":2,"locks":[{"nodeID":"node-1","metadata":{"unschedulable":false},'
    '"created":"2026-11-22T02:59:00.5Z","TTL":0},'
    '{"nodeID":"node-3","metadata":{"unschedulable":false},'
    '"created":"2026-11-22T01:00:00Z","TTL":3600000000000}]}'
)


def test_hand_set_manual_lock_is_held_forever() -> None:
    record = parse('{"nodeID":"manual"}')
    assert record.holders() == ["manual"]
    assert record.entries[0].created is None
    assert not record.entries[0].expired(NOW + timedelta(days=3650))
    assert record.acquire(LockEntry("node-1", NOW), 1) is None


def test_go_single_format() -> None:
    record = parse(GO_SINGLE)
    (entry,) = record.entries
    assert entry.node_id == "node-1"
    assert entry.created == datetime(2026, 11, 22, 2, 59, 0, 123456, tzinfo=UTC)
    assert entry.ttl == timedelta(0)
    assert not entry.unschedulable_before


def test_go_ttl_is_nanoseconds_and_expires() -> None:
    (entry,) = parse(GO_SINGLE_TTL).entries
    assert entry.ttl == timedelta(minutes=30)
    assert entry.unschedulable_before
    assert entry.expired(NOW)  # created 02:00, TTL 30m, now 03:00
    assert not entry.expired(datetime(2026, 11, 22, 2, 29, 59, tzinfo=UTC))
    assert entry.expired(datetime(2026, 11, 22, 2, 30, tzinfo=UTC))  # now - created >= TTL


def test_go_multi_format_expired_entries_hold_until_reclaimed() -> None:
    record = parse(GO_MULTI)
    assert record.holders() == ["node-1", "node-3"]
    assert [e.node_id for e in record.live(NOW)] == ["node-1"]  # node-3's hour ran out at 02:00
    assert record.acquire(LockEntry("node-2", NOW), 2) is None
    taken = record.acquire(LockEntry("node-2", NOW), 2, reclaim=frozenset({"node-3"}))
    assert taken is not None
    assert taken.holders() == ["node-1", "node-2"]


@pytest.mark.parametrize("text", [None, "", "  ", '{"nodeID":""}', '{"maxOwners":3,"locks":[]}'])
def test_free_lock_forms(text: str | None) -> None:
    assert parse(text).holders() == []


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "[1,2]",
        '{"locks":"x"}',
        '{"nodeID":"a","TTL":"soon"}',
        '{"nodeID":"a","created":"y"}',
    ],
)
def test_garbage_is_reported_not_guessed(text: str) -> None:
    with pytest.raises(LockFormatError):
        parse(text)


def test_render_single_is_what_go_kured_reads() -> None:
    entry = LockEntry("node-1", NOW, timedelta(minutes=5), {"unschedulable": True})
    value = json.loads(render(LockRecord((entry,)), 1) or "")
    assert value == {
        "nodeID": "node-1",
        "metadata": {"unschedulable": True},
        "created": "2026-11-22T03:00:00Z",
        "TTL": 300_000_000_000,
    }


def test_render_free_single_removes_the_annotation() -> None:
    assert render(LockRecord(), 1) is None


def test_render_multi_has_max_owners() -> None:
    value = json.loads(render(LockRecord((LockEntry("a", NOW),)), 3) or "")
    assert value["maxOwners"] == 3
    assert [lock["nodeID"] for lock in value["locks"]] == ["a"]
    assert json.loads(render(LockRecord(), 3) or "") == {"maxOwners": 3, "locks": []}


def test_reacquire_keeps_the_original_entry() -> None:
    first = LockEntry("node-1", NOW, metadata={"unschedulable": True})
    record = LockRecord((first,))
    again = record.acquire(LockEntry("node-1", NOW + timedelta(minutes=1)), 1)
    assert again == record


def test_release_only_removes_own_entry() -> None:
    record = parse(GO_MULTI).release("node-1")
    assert [e.node_id for e in record.entries] == ["node-3"]


def test_go_zero_time_round_trip() -> None:
    assert parse_go_time("0001-01-01T00:00:00Z") is None
    assert format_go_time(None) == "0001-01-01T00:00:00Z"


def test_go_time_with_offset() -> None:
    assert parse_go_time("2026-11-22T04:00:00+01:00") == datetime(2026, 11, 22, 3, tzinfo=UTC)


moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(moments)
def test_time_round_trip(moment: datetime) -> None:
    assert parse_go_time(format_go_time(moment)) == moment


entries = st.builds(
    LockEntry,
    node_id=st.text(min_size=1, max_size=20),
    created=st.one_of(st.none(), moments),
    ttl=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)).map(
        lambda d: timedelta(microseconds=int(d / timedelta(microseconds=1)))
    ),
    metadata=st.fixed_dictionaries({"unschedulable": st.booleans()}),
)


@given(st.lists(entries, max_size=5, unique_by=lambda e: e.node_id), st.integers(1, 6))
def test_render_parse_round_trip(items: list[LockEntry], concurrency: int) -> None:
    record = LockRecord(tuple(items))
    assert parse(render(record, concurrency)) == record


@given(
    st.lists(entries, max_size=6, unique_by=lambda e: e.node_id),
    st.integers(1, 4),
    st.text(min_size=1, max_size=5),
    st.sets(st.text(min_size=1, max_size=5)),
)
def test_acquire_never_exceeds_slots(
    items: list[LockEntry], slots: int, node: str, reclaim: set[str]
) -> None:
    record = LockRecord(tuple(items))
    taken = record.acquire(LockEntry(node, NOW), slots, frozenset(reclaim))
    if node in record.holders():
        assert taken == record
    elif taken is None:
        assert len([e for e in items if e.node_id not in reclaim]) >= slots
    else:
        assert node in taken.holders()
        assert len(taken.entries) <= slots
        assert not set(taken.holders()) & (reclaim - {node})


def test_group_annotations() -> None:
    base = "weave.works/kured-node-lock"
    assert group_annotation(base, "") == base
    assert group_annotation(base, "zone-a") == "weave.works/kured-node-lock-zone-a"
    lossy = group_annotation(base, "Zone_A")
    assert lossy.startswith("weave.works/kured-node-lock-zone-a-") and lossy != base
    assert group_annotation(base, "Zone_A") != group_annotation(base, "zone-a")
    long = group_annotation(base, "x" * 80)
    assert len(long.rpartition("/")[2]) <= 63


@given(st.text(min_size=1, max_size=80))
def test_group_slugs_are_label_values(group: str) -> None:
    slug = group_slug(group)
    assert len(slug) <= 63
    assert all(c.isascii() and (c.isalnum() or c in "-.") for c in slug)
