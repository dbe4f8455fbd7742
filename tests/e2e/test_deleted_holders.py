"""A lock holder whose Node is deleted (a cloud removing the machine) never releases its
slot, and the lock itself does not change: the nodes that watch the holders' Nodes must
free it at once, not at the next --period, whether a node is waiting for it or not."""

from __future__ import annotations

import asyncio

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node

from kured_testbed.api import Fleet, FleetFactory, default_manifests, wait_until
from tests.e2e.rolls import HOSTS_STAY_UP, kured_log, lock_holders


async def holding_the_lock(rolled: Fleet, holder: str) -> None:
    """``holder`` triggered and past "Commanding reboot" (its host stays up, so it keeps the
    slot)."""
    rolled.trigger(holder)

    async def commanded() -> bool:
        return "Commanding reboot" in kured_log(rolled, holder)

    await wait_until(commanded, what=f"{holder} rebooting with the lock", within=30)


async def test_a_deleted_holder_s_slot_is_taken_at_once_not_at_the_next_period(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    """The waiting node slept until its next --period (1h by default) before it took the
    slot."""
    rolled = await fleet(2)
    await rolled.run_kured(
        [*HOSTS_STAY_UP, lock_backend], manifests=default_manifests(), as_serviceaccount=True
    )
    holder, waiting = rolled.nodes
    await holding_the_lock(rolled, holder)
    rolled.trigger(waiting)

    async def waits() -> bool:
        return f"Lock already held: {holder}" in kured_log(rolled, waiting)

    await wait_until(waits, what=f"{waiting} waiting for the lock", within=30)
    await asyncio.sleep(2)  # past an evaluation that a lock change during the first one caused
    await kube.delete(Node, holder)

    async def acquired() -> bool:
        return "Acquired reboot lock" in kured_log(rolled, waiting)

    await wait_until(acquired, what=f"{waiting} taking the deleted holder's slot", within=20)
    assert await lock_holders(kube, rolled) == [waiting]
    assert f"Releasing stale lock of {holder}: holder node deleted" in kured_log(rolled, waiting)


async def test_a_deleted_holder_s_slot_is_freed_when_no_node_waits(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    """With no node waiting, the slot stayed taken until an idle node's next --period
    evaluation freed it: a lock held for up to an hour by a node that no longer exists."""
    rolled = await fleet(2)
    await rolled.run_kured(
        [*HOSTS_STAY_UP, lock_backend], manifests=default_manifests(), as_serviceaccount=True
    )
    holder, idle = rolled.nodes
    await holding_the_lock(rolled, holder)
    evaluations = kured_log(rolled, idle).count("Reboot not required")
    await kube.delete(Node, holder)

    async def freed() -> bool:
        return await lock_holders(kube, rolled) == []

    await wait_until(freed, what=f"the deleted {holder}'s slot freed", within=20)
    log = kured_log(rolled, idle)
    assert f"Releasing stale lock of {holder}: holder node deleted" in log
    assert log.count("Reboot not required") == evaluations  # by the watch, not an evaluation
