"""How an agent waits between evaluations: woken by its watchers (waiting nodes spread out),
stopped when cancelled."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from lightkube.resources.apps_v1 import DaemonSet

from kured.phases.base import slot_spread, woken


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
    assert slot_spread(daemonset(scheduled)) == pytest.approx(spread)
