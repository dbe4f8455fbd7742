"""How an agent waits between evaluations: woken by its watchers, stopped when cancelled."""

from __future__ import annotations

import asyncio

import pytest

from kured.agent import woken


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
