"""kured rolling through a fleet on the sandbox: Go kured's behaviour, checked from outside.

Every daemon runs as the ServiceAccount the repo's deploy/rbac.yaml creates, so the real
RBAC authorizer proves the rules are enough. Rolls use small fleets and short periods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient, codecs
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import DaemonSet, Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, Pod

from kured.lease import GROUP_LABEL, LOCK_LABEL
from kured.policy import PROGRESS_ANNOTATION
from kured_testbed.api import Fleet, FleetFactory, default_manifests, wait_until
from tests.chart import write_manifest
from tests.conftest import Receiver
from tests.e2e.rolls import (
    HOSTS_STAY_UP,
    LOCK_ANNOTATION,
    ZONE_LABEL,
    in_background,
    kured_log,
    lock_holders,
    lock_writes,
    node_annotations,
    on_leases,
    precious_pod,
    status_of,
    wait_rolled,
    watching,
)

pytestmark = pytest.mark.e2e

FAST = ["--period=2s"]
# How the simulator tells the two reboot methods apart (sandbox/supervisor.py).
DISRUPTED_POD_TIMEOUT = 120  # s: the disruption controller's expiry of a disruptedPods entry
HOW = {"command": "reboot requested", "signal": "init stand-in got"}


async def start(fleet: FleetFactory, nodes: int, *flags: str, workload: bool = True) -> Fleet:
    started = await fleet(nodes)
    if workload:
        await started.workload(stop_seconds=0.5)
    await started.run_kured([*FAST, *flags], manifests=default_manifests(), as_serviceaccount=True)
    return started


def boot_ids(fleet: Fleet) -> dict[str, str]:
    return {node: fleet.host(node).boot_id() for node in fleet.nodes}


async def assert_not_rebooting(fleet: Fleet, seconds: float = 6.0) -> None:
    await asyncio.sleep(seconds)
    assert all(not fleet.reboots(node) for node in fleet.nodes)


@pytest.mark.parametrize(("method", "concurrency", "nodes"), [("command", 1, 3), ("signal", 2, 4)])
async def test_roll_reboots_every_node_within_the_concurrency(
    fleet: FleetFactory,
    kube: AsyncClient,
    audit: Callable[[], list[dict[str, Any]]],
    lock_backend: str,
    *,
    method: str,
    concurrency: int,
    nodes: int,
) -> None:
    rolled = await start(
        fleet, nodes, f"--reboot-method={method}", f"--concurrency={concurrency}", lock_backend
    )
    before = boot_ids(rolled)
    async with watching(kube, rolled) as seen:
        rolled.trigger()
        await wait_rolled(kube, rolled)
    assert seen.ever_cordoned == set(rolled.nodes)
    assert seen.most_at_once <= concurrency
    where = "leases/" if on_leases(lock_backend) else "daemonsets/kured"
    assert any(where in write for write in lock_writes(audit(), rolled))
    after = boot_ids(rolled)
    for node in rolled.nodes:
        assert after[node] != before[node]
        (reboot,) = rolled.reboots(node)
        assert HOW[method] in reboot["reason"]
        log = kured_log(rolled, node)
        for line in ("Reboot required", "Acquired reboot lock", f"Draining node {node}"):
            assert line in log
        for line in ("Commanding reboot", "Uncordoning node", "Releasing lock"):
            assert line in log


async def test_a_node_cordoned_before_stays_cordoned(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    # Two schedulable nodes take turns hosting the workload.
    rolled = await start(fleet, 3, lock_backend)
    held = rolled.nodes[0]
    await kube.patch(Node, held, {"spec": {"unschedulable": True}})
    rolled.trigger()
    await wait_rolled(kube, rolled, keep_cordoned=frozenset({held}))
    node = await kube.get(Node, held)
    assert node.spec is not None and node.spec.unschedulable
    assert "Uncordoning node" not in kured_log(rolled, held)


async def test_blocking_pod_blocks_only_its_node(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    rolled = await start(fleet, 2, "--blocking-pod-selector=role=precious", lock_backend)
    blocked = rolled.nodes[0]
    await precious_pod(kube, rolled, blocked)
    rolled.trigger()
    await wait_rolled(kube, rolled, [rolled.nodes[1]])
    assert not rolled.reboots(blocked)
    assert "Reboot blocked: 1 blocking pods" in kured_log(rolled, blocked)
    status = status_of(await node_annotations(kube, blocked))
    assert status["activity"] == "blocked"


@pytest.mark.parametrize(
    ("flags", "blocks"),
    [
        ([], "AlwaysFiring"),
        (["--alert-filter-regexp=^(AlwaysFiring|MaintenanceWindow)$"], "SlowBurn"),
        (["--alert-filter-regexp=^(AlwaysFiring|MaintenanceWindow)$", "--alert-firing-only"], ""),
    ],
    ids=["firing-blocks", "pending-blocks", "filtered-and-firing-only-pass"],
)
async def test_prometheus_alerts(
    fleet: FleetFactory, kube: AsyncClient, prometheus: str, flags: list[str], blocks: str
) -> None:
    rolled = await start(fleet, 1, f"--prometheus-url={prometheus}", *flags, workload=False)
    rolled.trigger()
    if not blocks:
        await wait_rolled(kube, rolled, within=60)
        return
    await assert_not_rebooting(rolled)
    log = kured_log(rolled, rolled.nodes[0])
    assert "Reboot blocked: alerts firing:" in log
    assert blocks in log


@contextlib.asynccontextmanager
async def ready_floor(client: AsyncClient, namespace: str, name: str) -> AsyncIterator[list[int]]:
    """Track the readyReplicas a Deployment reports while the block runs."""
    seen: list[int] = []

    async def follow() -> None:
        async for _event, deployment in client.watch(
            Deployment, namespace=namespace, fields={"metadata.name": name}
        ):
            seen.append((deployment.status.readyReplicas if deployment.status else 0) or 0)

    async with in_background(follow()):
        yield seen


async def test_pdb_min_available_is_never_violated(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    rolled = await fleet(3)
    namespace = await rolled.workload(stop_seconds=0.5)
    await rolled.run_kured(
        [*FAST, lock_backend], manifests=default_manifests(), as_serviceaccount=True
    )
    async with ready_floor(kube, namespace, "db") as seen:
        rolled.trigger()
        await wait_rolled(kube, rolled)
    assert seen and min(seen) >= 1  # the db PDB says minAvailable: 1


async def unevictable(kube: AsyncClient, fleet: Fleet) -> str:
    """A workload whose PDB forbids every eviction; returns the node one of its pods is on."""
    namespace = await fleet.workload(stop_seconds=0.5)
    pdb = {  # the workload's own budget for web, tightened: no eviction is ever allowed
        "apiVersion": "policy/v1beta1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "maxUnavailable": 0},
    }
    await kube.apply(codecs.from_dict(pdb), field_manager="test", force=True)
    pods = [p async for p in kube.list(Pod, namespace=namespace, labels={"app": "web"})]
    return str(pods[0].spec.nodeName if pods[0].spec else "")


async def test_drain_timeout_releases_the_lock_and_uncordons(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    rolled = await fleet(1)
    node = await unevictable(kube, rolled)
    await rolled.run_kured(
        [*FAST, "--drain-timeout=3s", lock_backend],
        manifests=default_manifests(),
        as_serviceaccount=True,
    )
    rolled.trigger()

    async def gave_up() -> bool:
        return "Giving up the reboot: drain failed" in kured_log(rolled, node)

    await wait_until(gave_up, what="drain to time out", within=40)
    assert "disruption budget" in kured_log(rolled, node)
    await asyncio.sleep(1)
    assert not rolled.reboots(node)
    assert not (await kube.get(Node, node)).spec.unschedulable  # type: ignore[union-attr]
    assert "Releasing lock" in kured_log(rolled, node)


async def test_drain_timeout_with_force_reboot_reboots(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    rolled = await fleet(1)
    await unevictable(kube, rolled)
    await rolled.run_kured(
        [*FAST, "--drain-timeout=2s", "--force-reboot", lock_backend],
        manifests=default_manifests(),
        as_serviceaccount=True,
    )
    rolled.trigger()
    await wait_rolled(kube, rolled, within=60)


async def test_closed_window_does_nothing(fleet: FleetFactory) -> None:
    # Mondays only, from 00:00 to 00:01: closed for all but two minutes of the week.
    closed = ["--reboot-days=mo", "--start-time=00:00", "--end-time=00:01", "--time-zone=UTC"]
    rolled = await start(fleet, 1, *closed, workload=False)
    rolled.trigger()
    await assert_not_rebooting(rolled)
    assert "outside the maintenance window" in kured_log(rolled, rolled.nodes[0])


async def test_notifications_arrive_with_the_templates(
    fleet: FleetFactory, kube: AsyncClient, receiver: Receiver, lock_backend: str
) -> None:
    rolled = await start(
        fleet,
        1,
        f"--notify-url=json://127.0.0.1:{receiver.port}/hook",
        "--message-template-drain=Draining %s now",
        lock_backend,
        workload=False,
    )
    node = rolled.nodes[0]
    rolled.trigger()
    await wait_rolled(kube, rolled)
    messages = [body.get("message") for _path, body in receiver.received]
    assert f"Draining {node} now" in messages
    assert f"Rebooting node {node}" in messages
    assert f"Node {node} rebooted & uncordoned successfully!" in messages


async def lock_by_hand(kube: AsyncClient, fleet: Fleet, lock_backend: str, holder: str) -> None:
    """What an operator types to hold the lock (``holder`` "manual") or free it (""): Go
    kured's annotation without a creation time, or the first slot's Lease without a
    renewTime. Neither records when it was taken, so kured never reclaims it
    (:func:`kured.policy.reclaim_reason`: set by hand)."""
    namespace = fleet.kured_namespace
    if on_leases(lock_backend):
        labels = {LOCK_LABEL: "kured", GROUP_LABEL: ""}  # what LeaseLock selects
        lease = Lease(
            metadata=ObjectMeta(name="kured-lock-0", namespace=namespace, labels=labels),
            spec=LeaseSpec(holderIdentity=holder or None),
        )
        await kube.apply(lease, field_manager="operator", force=True)
        return
    value = json.dumps({"nodeID": holder}) if holder else None
    patch = {"metadata": {"annotations": {LOCK_ANNOTATION: value}}}
    await kube.patch(DaemonSet, "kured", patch, namespace=namespace)


async def test_a_lock_set_by_hand_holds_until_removed(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    rolled = await start(fleet, 1, lock_backend, workload=False)
    await lock_by_hand(kube, rolled, lock_backend, "manual")
    rolled.trigger()
    await assert_not_rebooting(rolled)
    assert "Lock already held: manual" in kured_log(rolled, rolled.nodes[0])
    assert await lock_holders(kube, rolled) == ["manual"]
    await lock_by_hand(kube, rolled, lock_backend, "")
    await wait_rolled(kube, rolled)


async def test_go_kured_lock_format_is_written(fleet: FleetFactory, kube: AsyncClient) -> None:
    rolled = await start(fleet, 1, "--lock-ttl=30m", workload=False)
    rolled.trigger()
    node = rolled.nodes[0]

    async def written() -> dict[str, object] | None:
        ds = await kube.get(DaemonSet, "kured", namespace=rolled.kured_namespace)
        text = ((ds.metadata or ObjectMeta()).annotations or {}).get(LOCK_ANNOTATION)
        return json.loads(text) if text else None

    value = await wait_until(written, what="the lock", within=30)
    assert value["nodeID"] == node
    assert value["metadata"] == {"unschedulable": False}
    assert value["TTL"] == 30 * 60 * 10**9
    assert str(value["created"]).endswith("Z")
    await wait_rolled(kube, rolled)


async def test_a_daemon_restart_mid_drain_is_not_a_reboot(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    """Go kured's worst failure: a pod restart while holding the lock counts as "rebooted"."""
    rolled = await fleet(2)
    await rolled.workload(stop_seconds=3)
    await rolled.run_kured(
        [*FAST, lock_backend],
        manifests=default_manifests(),
        as_serviceaccount=True,
    )
    async with watching(kube, rolled) as seen:
        rolled.trigger()

        async def draining() -> str | None:
            for node in rolled.nodes:
                progress = (await node_annotations(kube, node)).get(PROGRESS_ANNOTATION, "")
                if '"draining"' in progress:
                    return node
            return None

        victim = await wait_until(draining, what="a node draining", within=30)
        holders = await lock_holders(kube, rolled)
        rolled.kill(victim)
        await asyncio.sleep(1)
        assert await lock_holders(kube, rolled) == holders  # still held across the crash
        # A kill that cuts an eviction request short leaves its pod in the budget's
        # disruptedPods without deleting it, and the budget refuses every eviction until
        # the disruption controller drops the entry two minutes later (docs/chaos.md).
        await wait_rolled(kube, rolled, within=120 + DISRUPTED_POD_TIMEOUT)
    assert seen.most_at_once == 1
    assert all(len(rolled.reboots(node)) == 1 for node in rolled.nodes)


async def test_a_reboot_under_way_is_not_commanded_again_when_the_lock_moves(
    fleet: FleetFactory, kube: AsyncClient
) -> None:
    """Each lock change woke the agent that had just commanded its reboot, and it commanded
    it again: two reboots wherever a second command queues a second one (the many-agents
    bench saw a node reboot twice). The host here ignores the signal, so it stays up."""
    rolled = await fleet(1)
    await rolled.run_kured(HOSTS_STAY_UP, manifests=default_manifests(), as_serviceaccount=True)
    [node] = rolled.nodes
    rolled.trigger()

    async def commanded() -> int:
        return kured_log(rolled, node).count("Commanding reboot")

    await wait_until(commanded, what="the reboot commanded", within=30)
    await move_another_lock(kube, rolled)
    assert await commanded() == 1
    assert rolled.reboots(node) == []


async def test_a_node_waiting_for_the_lock_wakes_only_when_a_slot_frees(
    fleet: FleetFactory, kube: AsyncClient
) -> None:
    """Every lock change woke every waiting node to read its Node and the lock, also when
    every slot stayed taken: with 200 nodes, a herd of reads at each hand-off."""
    rolled = await fleet(2)
    await rolled.run_kured(HOSTS_STAY_UP, manifests=default_manifests(), as_serviceaccount=True)
    holder, waiting = rolled.nodes
    rolled.trigger(holder)
    await wait_until(
        lambda: lock_holders(kube, rolled), what=f"{holder} holding the lock", within=30
    )
    rolled.trigger(waiting)

    async def evaluations() -> int:
        return kured_log(rolled, waiting).count(f"Lock already held: {holder}")

    await wait_until(evaluations, what=f"{waiting} waiting for the lock", within=30)
    # The daemons start together, so a lock change may land while the waiting node is still
    # evaluating; it evaluates once more at once, rightly. Count from when that is over.
    await asyncio.sleep(2)
    before = await evaluations()
    await move_another_lock(kube, rolled)
    assert await evaluations() == before
    unlock = {"metadata": {"annotations": {LOCK_ANNOTATION: None}}}
    await kube.patch(DaemonSet, "kured", unlock, namespace=rolled.kured_namespace)

    async def acquired() -> bool:
        return "Acquired reboot lock" in kured_log(rolled, waiting)

    await wait_until(acquired, what=f"{waiting} taking the freed slot", within=10)  # period: 1m


async def test_a_node_blocked_by_its_pods_sleeps_through_lock_changes(
    fleet: FleetFactory, kube: AsyncClient
) -> None:
    """Every lock change woke every blocked node (pods, alerts, a pause) to ask its blockers
    again, although no lock change can lift those blocks: N wake-ups per hand-off."""
    rolled = await fleet(1)
    blocking = "--blocking-pod-selector=role=precious"
    await rolled.run_kured(
        [*HOSTS_STAY_UP, blocking], manifests=default_manifests(), as_serviceaccount=True
    )
    [node] = rolled.nodes
    await precious_pod(kube, rolled, node)
    rolled.trigger(node)

    async def evaluations() -> int:
        return kured_log(rolled, node).count("Reboot blocked:")

    await wait_until(evaluations, what=f"{node} blocked by its pod", within=30)
    await asyncio.sleep(2)  # a change during the first evaluation rightly wakes it once more
    before = await evaluations()
    await move_another_lock(kube, rolled)
    assert await evaluations() == before


async def move_another_lock(kube: AsyncClient, rolled: Fleet) -> None:
    """Another zone's lock changes a few times, as its nodes take and free it."""
    for moves in range(3):
        other = {f"{LOCK_ANNOTATION}-elsewhere": str(moves)}
        patch = {"metadata": {"annotations": other}}
        await kube.patch(DaemonSet, "kured", patch, namespace=rolled.kured_namespace)
        await asyncio.sleep(1)


async def test_each_zone_gets_its_own_slots(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    rolled = await start(fleet, 6, f"--lock-group-label={ZONE_LABEL}", lock_backend, workload=False)
    async with watching(kube, rolled) as seen:
        rolled.trigger()
        await wait_rolled(kube, rolled)
    assert seen.most_per_zone == 1
    assert 1 <= seen.most_at_once <= 3
    assert seen.ever_cordoned == set(rolled.nodes)


async def test_a_node_moved_to_another_zone_takes_that_zone_s_lock(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    """The --lock-group-label value was read once, at start: a node relabelled into
    another zone went on taking its old zone's lock until its pod restarted, and went down
    beside the new zone's holder."""
    rolled = await fleet(2)
    grouped = [*HOSTS_STAY_UP, f"--lock-group-label={ZONE_LABEL}", lock_backend]
    await rolled.run_kured(grouped, manifests=default_manifests(), as_serviceaccount=True)
    holder, moved = rolled.nodes
    zone = await zone_of(kube, holder)
    assert await zone_of(kube, moved) != zone
    rolled.trigger(holder)

    async def commanded() -> bool:
        return "Commanding reboot" in kured_log(rolled, holder)

    await wait_until(commanded, what=f"{holder} rebooting with its zone's lock", within=30)
    await kube.patch(Node, moved, {"metadata": {"labels": {ZONE_LABEL: zone}}})

    async def joined() -> bool:
        return f"Lock group: {ZONE_LABEL}={zone}" in kured_log(rolled, moved)

    await wait_until(joined, what=f"{moved} in {zone}", within=20)  # its period: a minute
    rolled.trigger(moved)

    async def waits() -> bool:
        return f"Lock already held: {holder}" in kured_log(rolled, moved)

    await wait_until(waits, what=f"{moved} waiting for {holder}", within=30)
    assert "Acquired reboot lock" not in kured_log(rolled, moved)


async def zone_of(kube: AsyncClient, node: str) -> str:
    found = await kube.get(Node, node)
    return str(((found.metadata.labels if found.metadata else None) or {}).get(ZONE_LABEL, ""))


async def test_max_unavailable_caps_every_zone_together(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    rolled = await start(
        fleet,
        4,
        f"--lock-group-label={ZONE_LABEL}",
        "--concurrency=2",
        "--max-unavailable=1",
        lock_backend,
        workload=False,
    )
    async with watching(kube, rolled) as seen:
        rolled.trigger()
        await wait_rolled(kube, rolled)
    assert seen.most_at_once == 1


async def test_a_freed_slot_is_taken_at_once_not_at_the_next_period(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    """Hand-off by watch, across --lock-group-label groups too: the two nodes are in
    different zones, so each has a slot, but --max-unavailable=1 lets only one go down; the
    other goes as soon as the first lets go, although its next --period is a minute away."""
    rolled = await start(
        fleet,
        2,
        "--period=1m",
        f"--lock-group-label={ZONE_LABEL}",
        "--max-unavailable=1",
        lock_backend,
        workload=False,
    )
    async with watching(kube, rolled) as seen:
        rolled.trigger()
        await wait_rolled(kube, rolled, within=40)
    assert seen.most_at_once == 1
    assert len(set(seen.zones.values())) == 2


async def test_max_unavailable_counts_nodes_down_for_any_reason(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str
) -> None:
    rolled = await start(fleet, 2, "--max-unavailable=1", lock_backend, workload=False)
    other, target = rolled.nodes
    await kube.patch(Node, other, {"spec": {"unschedulable": True}})  # an operator's cordon
    rolled.trigger(target)
    await assert_not_rebooting(rolled)
    assert "max-unavailable 1: 1 of 2 nodes down" in kured_log(rolled, target)
    await kube.patch(Node, other, {"spec": {"unschedulable": None}})
    await wait_rolled(kube, rolled, [target])


async def test_roll_with_the_released_manifests_and_kuredctl_status_mid_roll(
    fleet: FleetFactory, kube: AsyncClient, lock_backend: str, tmp_path: Path
) -> None:
    """The objects users apply (generated from the chart) carry the RBAC the roll needs, and
    `kubectl kured status` tells the truth while nodes reboot. The released file is the
    chart's defaults; for the Lease backend, the chart rendered with lockBackend: lease."""
    rolled = await fleet(3)
    if on_leases(lock_backend):
        lease_values = {"configuration": {"lockBackend": "lease"}}
        manifest = write_manifest(lease_values, tmp_path / "kured-lease.yaml")
    else:
        manifest = RELEASED
    await rolled.run_kured([*FAST, lock_backend], manifests=[manifest], as_serviceaccount=True)
    rolled.trigger()

    async def mid_roll() -> dict[str, Any] | None:
        report = await kuredctl_status(rolled)
        return report if status_holders(report) else None

    report = await wait_until(mid_roll, what="a lock holder in kuredctl status", within=30)
    (holder,) = status_holders(report)
    rows = {row["name"]: row for row in report["nodes"]}
    assert set(rows) >= set(rolled.nodes)
    assert rows[holder]["lock"] == "held"
    assert rows[holder]["status"]["rebootRequired"]
    await wait_rolled(kube, rolled)


RELEASED = Path(__file__).resolve().parents[2] / "deploy" / "manifests" / "kured-0.1.0.yaml"


def status_holders(report: dict[str, Any]) -> list[str]:
    """The holders `kuredctl status -o json` names, of the annotation or of the Leases."""
    leases = report["leases"]["holders"] if report["leases"] else []
    return [h["nodeID"] for h in [*report["lock"]["holders"], *leases]]


async def kuredctl_status(fleet: Fleet) -> dict[str, Any]:
    kuredctl = Path(sys.executable).parent / "kuredctl"  # the console script beside python
    command = [str(kuredctl), "--kubeconfig", str(fleet.plane.kubeconfig)]
    command += ["-n", fleet.kured_namespace, "status", "-o", "json"]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report
