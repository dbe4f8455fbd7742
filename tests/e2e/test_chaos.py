"""The chaos suite in its short CI form, and the daemon bugs it found, each shown on its own.

`make chaos` is the long run (docs/chaos.md); here one roll per lock backend, a dozen or
more faults each, judged by the same independent checker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.core_v1 import Node

from kured_testbed import clockskew
from kured_testbed.api import Fleet, FleetFactory, default_manifests, wait_until
from kured_testbed.audit_check import node_writes
from kured_testbed.chaos import BACKENDS, Settings, chaos
from kured_testbed.controlplane import ControlPlane
from kured_testbed.faults import progress_phase
from tests.e2e.rolls import LOCK_ANNOTATION, kured_log, lock_holders, wait_rolled, watching

pytestmark = pytest.mark.e2e

FAST = ["--period=2s"]


async def test_short_chaos_run_has_no_violations_and_nothing_stuck(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    totals = await chaos(
        control_plane,
        Settings(),
        backends=BACKENDS,
        faults=12,
        seed=20261122,
        workdir=tmp_path,
        prefix="chaos-ci",
    )
    for backend in totals:
        rolls = "\n".join(roll.line() for roll in backend.rolls)
        assert sum(backend.injected.values()) >= 12, rolls
        assert (backend.violations, backend.stuck) == (0, 0), rolls


async def start(fleet: Fleet, *flags: str, env: dict[str, str] | None = None) -> None:
    await fleet.run_kured(
        [*FAST, *flags], manifests=default_manifests(), as_serviceaccount=True, env=env
    )


async def holding(kube: AsyncClient, fleet: Fleet, node: str) -> None:
    """Wait until node holds the lock and is past acquiring it (draining or rebooting)."""

    async def busy() -> bool:
        return progress_phase(await kube.get(Node, node)) in ("draining", "rebooting")

    await wait_until(busy, what=f"{node} draining or rebooting", within=30, interval=0.05)


async def test_garbage_in_the_lock_is_rebuilt_from_the_nodes_progress(
    fleet: FleetFactory, kube: AsyncClient
) -> None:
    """It used to stop every reboot for good ("Lock annotation is unreadable")."""
    rolled = await fleet(2)
    await rolled.workload(stop_seconds=0.5)
    await start(rolled)
    first = rolled.nodes[0]
    rolled.trigger(first)
    await holding(kube, rolled, first)
    garbage = {"metadata": {"annotations": {LOCK_ANNOTATION: "}{ not a lock"}}}
    async with watching(kube, rolled) as seen:
        await kube.patch(DaemonSet, "kured", garbage, namespace=rolled.kured_namespace)
        rolled.trigger()
        await wait_rolled(kube, rolled, within=90)
    assert seen.most_at_once == 1
    logs = "".join(kured_log(rolled, node) for node in rolled.nodes)
    assert f"Rebuilt the lock from the nodes' progress records: held by {first}" in logs


async def test_the_slot_of_a_deleted_holder_is_freed(
    fleet: FleetFactory, kube: AsyncClient
) -> None:
    """With a free slot left, nobody reclaimed the deleted node's: its lock stayed forever."""
    rolled = await fleet(2)
    await start(rolled, "--concurrency=2")
    gone, other = rolled.nodes
    rolled.trigger(gone)
    await holding(kube, rolled, gone)
    await kube.delete(Node, gone)
    rolled.trigger(other)
    await wait_rolled(kube, rolled, [other], within=60)
    assert await lock_holders(kube, rolled) == []
    assert f"Releasing stale lock of {gone}: holder node deleted" in kured_log(rolled, other)


async def test_kured_never_writes_the_cordon_of_a_node_cordoned_before(
    fleet: FleetFactory, kube: AsyncClient, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    """It used to cordon it again (a no-op patch kubectl and Go kured skip)."""
    rolled = await fleet(1)
    held = rolled.nodes[0]
    await kube.patch(Node, held, {"spec": {"unschedulable": True}})
    await start(rolled)
    rolled.trigger()
    await wait_rolled(kube, rolled, keep_cordoned=frozenset({held}))
    kured = f"system:serviceaccount:{rolled.kured_namespace}:kured"
    writes = [w for w in node_writes(audit(), [held]) if w.user == kured]
    assert writes, "kured wrote its progress on the node"
    assert [w for w in writes if w.unschedulable is not None] == []


async def test_a_clock_ahead_never_takes_the_slot_of_a_node_mid_reboot(
    fleet: FleetFactory, kube: AsyncClient, tmp_path: Path
) -> None:
    """A node whose clock ran an hour ahead saw the rebooting holder NotReady "for over"
    the stale-lock timeout and took its slot: two nodes down with concurrency 1."""
    library = clockskew.build(tmp_path)
    if library is None:
        pytest.skip("no C compiler for the clock shim")
    rolled = await fleet(2, reboot_seconds=8.0)
    first, ahead = rolled.nodes
    clockskew.jump(rolled.state.node(ahead), 3600)
    flags = ["--lock-ttl=5s", "--stale-lock-timeout=30s"]
    await start(rolled, *flags, env={"LD_PRELOAD": str(library)})
    rolled.trigger(first)

    async def down() -> bool:
        node = await kube.get(Node, first)
        conditions = (node.status.conditions if node.status else None) or []
        return any(c.type == "Ready" and c.status != "True" for c in conditions)

    await wait_until(down, what=f"{first} rebooting", within=30, interval=0.1)
    rolled.trigger(ahead)
    await wait_rolled(kube, rolled, within=90)
    [back] = rolled.reboots(first)
    [later] = rolled.reboots(ahead)
    assert later["down"] > back["time"]
