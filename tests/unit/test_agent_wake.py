"""How an agent waits between evaluations: woken by its watchers (waiting nodes spread out),
stopped when cancelled."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from typing import Any, cast

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from lightkube.resources.apps_v1 import DaemonSet

from kured.lock import LockChange
from kured.phases.base import fleet_size, slot_spread, woken
from kured.phases.wakeups import HOLDER_WATCHERS, Wake, lock_news, watches_holders
from kured.policy import Observation, Progress, Step, decide
from tests.unit.test_policy import observations


async def test_a_wake_and_a_cancellation_at_the_same_moment_still_cancel() -> None:
    """asyncio.wait_for (Python 3.11) returned normally here: the task meant to stop ran on."""
    wake = asyncio.Event()
    sleeping = asyncio.create_task(woken(wake, 30.0))
    await asyncio.sleep(0.01)
    wake.set()
    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping


async def test_woken_says_whether_the_event_came_before_the_timeout() -> None:
    wake = asyncio.Event()
    assert not await woken(wake, 0.01)
    wake.set()
    assert await woken(wake, 30.0)


def daemonset(scheduled: int | None) -> DaemonSet:
    raw: dict[str, Any] = {"metadata": {"name": "kured"}, "spec": {"selector": {}, "template": {}}}
    if scheduled is not None:
        counts = ("currentNumberScheduled", "desiredNumberScheduled", "numberReady")
        raw["status"] = dict.fromkeys(counts, scheduled) | {"numberMisscheduled": 0}
    return cast(DaemonSet, DaemonSet.from_dict(raw))


@pytest.mark.parametrize(
    ("scheduled", "spread"), [(None, 0.01), (0, 0.01), (12, 0.12), (200, 2.0), (5000, 2.0)]
)
def test_waiting_nodes_spread_their_wake_ups_more_in_a_bigger_fleet(
    scheduled: int | None, spread: float
) -> None:
    assert slot_spread(fleet_size(daemonset(scheduled))) == pytest.approx(spread)


# -- which nodes watch the lock holders' Nodes (kured.phases.wakeups.watches_holders) --------


@pytest.mark.parametrize("nodes", [0, 1, 2, HOLDER_WATCHERS])
def test_every_node_of_a_small_or_uncounted_fleet_watches_the_holders(nodes: int) -> None:
    assert all(watches_holders(f"node-{i}", nodes) for i in range(max(nodes, 3)))


@pytest.mark.parametrize("nodes", [100, 200, 1000, 5000])
def test_about_sixteen_nodes_of_a_big_fleet_watch_the_holders(nodes: int) -> None:
    """Each holder's change reaches every watcher: their number must not grow with N."""
    names = [f"scale-{i}" for i in range(nodes)]
    picked = [name for name in names if watches_holders(name, nodes)]
    assert 4 <= len(picked) <= 4 * HOLDER_WATCHERS
    assert picked == [name for name in names if watches_holders(name, nodes)]  # stable


# -- which lock changes wake an agent (kured.phases.wakeups.lock_news) -----------------------

# Steps that do something (the others wait, or say why not).
PASSIVE = frozenset({Step.NOTHING, Step.BLOCKED, Step.WAIT_FOR_LOCK, Step.LOOP_GUARD, Step.DRY_RUN})
BLOCK_KINDS = ("pods", "prometheus", "query", "max-unavailable", "a-kind-yet-to-come")


def block_kind(obs: Observation, blocker: str) -> str:
    """What the agent records as the last block (the blocked metric's kind)."""
    return "pause" if obs.paused else blocker if obs.blocked_by else ""


def after(obs: Observation, kind: str, change: LockChange) -> list[Observation]:
    """Every observation the next evaluation could make, if only ``change`` happened: the
    node's entry may have been removed; a slot is free for it only if the change freed
    one; the pause may differ only if it changed; a --max-unavailable block may be lifted
    or come back, other blocks stay."""
    pauses = ["", "resumed elsewhere"] if change.pause_changed else [obs.paused]
    lifted = kind not in ("pods", "prometheus", "query")  # as far as the test knows
    blocks = ["", "max-unavailable 1: 1 of 2 nodes down"] if lifted else [obs.blocked_by]
    return [
        replace(
            obs,
            holds_lock=holds,
            lock_available=change.slot_free or holds,
            paused=paused,
            blocked_by=blocked,
        )
        for holds, paused, blocked in itertools.product({obs.holds_lock, False}, pauses, blocks)
    ]


# Half of them a node that needs a reboot in an open window and has not begun: the corner
# where hand-offs, blocks and pauses meet (rare among all observations).
wanting = observations.map(
    lambda obs: replace(obs, reboot_required=True, window_open=True, progress=Progress())
)


@settings(max_examples=500)
@given(
    st.one_of(observations, wanting),
    st.sampled_from(BLOCK_KINDS),
    st.builds(LockChange, st.booleans(), st.booleans()),
)
def test_a_lock_change_that_lets_the_node_act_always_wakes_it(
    obs: Observation, blocker: str, change: LockChange
) -> None:
    """The filter may skip a wake-up only where the next decision would be as passive as
    the last. (After REBOOT the host is going down: a lock change is not news by design.)"""
    last = decide(obs).step
    assume(last is not Step.REBOOT)
    kind = block_kind(obs, blocker)
    could_act = any(
        decide(later).step not in PASSIVE | {last} for later in after(obs, kind, change)
    )
    if could_act:
        assert lock_news(last, kind, change) in (Wake.NOW, Wake.SPREAD)


@pytest.mark.parametrize("kind", ["pods", "prometheus", "query"])
def test_a_node_blocked_by_its_pods_or_alerts_sleeps_through_hand_offs(kind: str) -> None:
    for change in (LockChange(True), LockChange(False), LockChange(True, pause_changed=True)):
        assert lock_news(Step.BLOCKED, kind, change) is Wake.NO


def test_a_paused_node_wakes_only_when_the_pause_changes() -> None:
    assert lock_news(Step.BLOCKED, "pause", LockChange(True)) is Wake.NO
    assert lock_news(Step.BLOCKED, "pause", LockChange(False, pause_changed=True)) is Wake.NOW


@pytest.mark.parametrize("kind", ["max-unavailable", "a-kind-yet-to-come"])
def test_a_block_a_release_may_lift_wakes_on_every_lock_change(kind: str) -> None:
    for change in (LockChange(True), LockChange(False)):
        assert lock_news(Step.BLOCKED, kind, change) is Wake.NOW
