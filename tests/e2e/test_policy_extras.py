"""Maintenance policy beyond Go kured, on the sandbox (docs/policy.md).

Windows and blackout dates, --max-node-age, --dry-run, pause/resume through kuredctl,
notifications for trouble (several URLs, placeholders, packages), --blocking-query and
Alertmanager silences. Every daemon runs as the ServiceAccount of deploy/rbac.yaml, so the
RBAC it ships is proven enough. Small fleets, two-second periods.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner
from lightkube import AsyncClient, codecs
from lightkube.resources.core_v1 import Event, Node, Pod

from kured.ctl.cli import cli as kuredctl_cli
from kured.durations import parse_go_duration
from kured_testbed.api import Fleet, FleetFactory, default_manifests, wait_until
from kured_testbed.controlplane import ControlPlane
from tests.conftest import Alertmanager, Receiver
from tests.e2e.rolls import (
    kured_log,
    lock_holders,
    lock_writes,
    node_annotations,
    precious_pod,
    status_of,
    wait_rolled,
    watching,
)

pytestmark = pytest.mark.e2e

FAST = ["--period=2s"]
TAINT = "kured.dev/reboot-pending"
IGNORE_ALERTS = "--alert-filter-regexp=.*"  # the Prometheus fixture's alerts never block
PACKAGES = "linux-image-sandbox"  # what the sandbox writes to reboot-required.pkgs


async def start(fleet: FleetFactory, nodes: int, *flags: str, workload: bool = False) -> Fleet:
    started = await fleet(nodes)
    if workload:
        await started.workload(stop_seconds=0.5)
    await run(started, *flags)
    return started


async def run(fleet: Fleet, *flags: str) -> None:
    """(Re)start the fleet's daemons with these flags."""
    await fleet.run_kured([*FAST, *flags], manifests=default_manifests(), as_serviceaccount=True)


async def status(kube: AsyncClient, node: str) -> dict[str, Any]:
    return status_of(await node_annotations(kube, node))


async def wait_status(
    kube: AsyncClient, node: str, within: float = 30, **expected: object
) -> dict[str, Any]:
    async def matches() -> dict[str, Any] | None:
        now = await status(kube, node)
        return now if all(now.get(k) == v for k, v in expected.items()) else None

    return await wait_until(matches, what=f"{node} status {expected}", within=within)


async def wait_log(fleet: Fleet, node: str, text: str, within: float = 30) -> None:
    async def logged() -> bool:
        return text in kured_log(fleet, node)

    await wait_until(logged, what=f"{text!r} in {node}'s log", within=within, interval=0.3)


async def metrics(fleet: Fleet, node: str) -> str:
    """The node's daemon's /metrics (the port is picked at start; the log names it)."""
    ports = re.findall(
        r"Serving /metrics and /healthz on 127\.0\.0\.1:(\d+)", kured_log(fleet, node)
    )
    async with httpx2.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{ports[-1]}/metrics")
    return response.text


async def taints(kube: AsyncClient, node: str) -> set[tuple[str, str]]:
    spec = (await kube.get(Node, node)).spec
    return {(t.key, t.effect) for t in (spec.taints if spec else None) or []}


async def wait_taint(kube: AsyncClient, node: str, *, present: bool) -> None:
    async def as_wanted() -> bool:
        return ((TAINT, "PreferNoSchedule") in await taints(kube, node)) == present

    await wait_until(as_wanted, what=f"taint {TAINT} {'on' if present else 'off'} {node}")


async def events(kube: AsyncClient, node: str) -> list[tuple[str, str]]:
    """(reason, message) of kured's Events about the node, oldest first."""
    found = [
        e
        async for e in kube.list(Event, namespace="default", fields={"involvedObject.name": node})
        if e.source and e.source.component == "kured"
    ]
    found.sort(key=lambda e: e.lastTimestamp or datetime.min.replace(tzinfo=UTC))
    return [(e.reason or "", e.message or "") for e in found]


def messages(receiver: Receiver, path: str | None = None) -> list[str]:
    return [str(body.get("message")) for p, body in receiver.received if path in (None, p)]


async def wait_message(receiver: Receiver, needle: str, within: float = 30) -> str:
    async def arrived() -> str | None:
        return next((m for m in messages(receiver) if needle in m), None)

    return await wait_until(arrived, what=f"a notification with {needle!r}", within=within)


def age(fleet: Fleet, node: str, by: timedelta) -> None:
    """Make the node's current boot look older: the simulated boot time is boot_id's mtime."""
    when = time.time() - by.total_seconds()
    os.utime(fleet.state.node(node).boot_id, (when, when))


async def assert_no_reboot(fleet: Fleet, seconds: float = 6.0) -> None:
    await asyncio.sleep(seconds)
    assert all(not fleet.reboots(node) for node in fleet.nodes)


def day(offset: int) -> str:
    return (datetime.now(UTC) + timedelta(days=offset)).strftime("%Y-%m-%d")


def closed_window() -> str:
    """A --reboot-window that is closed for the next days: one minute, three days ahead."""
    weekday = (datetime.now(UTC) + timedelta(days=3)).strftime("%a").lower()
    return f"--reboot-window={weekday} 12:00-12:01 UTC"


# --- 1. windows and blackout dates -------------------------------------------------------


async def test_need_is_reported_outside_the_window_and_the_reboot_waits(
    fleet: FleetFactory, kube: AsyncClient
) -> None:
    taint = f"--prefer-no-schedule-taint={TAINT}"
    rolled = await start(fleet, 1, taint, closed_window())
    node = rolled.nodes[0]
    rolled.trigger()
    seen = await wait_status(kube, node, rebootRequired=True, activity="waiting-for-window")
    assert seen["windowOpen"] is False
    assert seen["reason"] == f"{rolled.state.node(node).sentinel} exists (packages: {PACKAGES})"
    text = await metrics(rolled, node)
    assert f'kured_reboot_required{{node="{node}"}} 1.0' in text
    assert f'kured_window_open{{node="{node}"}} 0.0' in text
    assert f'kured_reboot_reason{{node="{node}",reason="sentinel"}} 1.0' in text
    await wait_taint(kube, node, present=True)
    assert ("RebootRequired", f"Reboot required: {seen['reason']}") in await events(kube, node)

    # An open window, but today is a blackout date: still waiting.
    blackout = f"--blackout-dates={day(-1)}..{day(1)}"
    await run(rolled, taint, "--reboot-window=* 0:00-23:59:59", blackout)
    await wait_log(rolled, node, f"Reboot schedule: * 00:00-23:59:59 UTC except {day(-1)}")
    await assert_no_reboot(rolled)
    assert "outside the maintenance window" in kured_log(rolled, node)

    # The blackout lifted: the reboot goes ahead and the taint goes.
    await run(rolled, taint, "--reboot-window=* 0:00-23:59:59")
    await wait_rolled(kube, rolled)
    await wait_taint(kube, node, present=False)


# --- 2. --max-node-age -------------------------------------------------------------------


async def test_an_old_node_is_rebooted_without_a_sentinel(
    fleet: FleetFactory, kube: AsyncClient, receiver: Receiver, lock_backend: str
) -> None:
    started = await fleet(2)
    old, young = started.nodes
    age(started, old, timedelta(hours=30))
    await run(
        started,
        lock_backend,
        "--max-node-age=24h",
        f"--notify-url=json://127.0.0.1:{receiver.port}/hook",
        "--message-template-drain=Draining {node}: {reason}",
    )
    await wait_rolled(kube, started, [old])
    reason = "longer than --max-node-age 24h0m0s"
    assert f"Draining {old}: node up 30h0m" in (await wait_message(receiver, reason))
    assert "Reboot required: node up 30h0m" in kured_log(started, old)
    required = [m for r, m in await events(kube, old) if r == "RebootRequired"]
    assert required and reason in required[0]
    await asyncio.sleep(3)
    assert not started.reboots(young)
    assert "Reboot not required" in kured_log(started, young)


# --- 3. --dry-run ------------------------------------------------------------------------


async def test_dry_run_says_what_it_would_do_and_touches_nothing(
    fleet: FleetFactory,
    kube: AsyncClient,
    receiver: Receiver,
    audit: Callable[[], list[dict[str, Any]]],
    lock_backend: str,
) -> None:
    started = await fleet(2)
    namespace = await unevictable(kube, started)
    pods_before = await pod_names(kube, namespace)
    sentinel_node, old_node = started.nodes
    age(started, old_node, timedelta(hours=30))
    async with watching(kube, started) as seen:
        await run(
            started,
            lock_backend,
            "--dry-run",
            "--max-node-age=24h",
            f"--notify-url=json://127.0.0.1:{receiver.port}/dry",
        )
        started.trigger(sentinel_node)
        for node in started.nodes:
            await wait_log(started, node, f"Dry run: would reboot node {node}")
            await wait_status(kube, node, activity="dry-run")
        await wait_message(receiver, f"Dry run on node {sentinel_node}")
        await wait_message(receiver, f"Dry run on node {old_node}")
        await assert_no_reboot(started, 3)
    assert seen.ever_cordoned == set()
    assert not await lock_holders(kube, started)
    assert not lock_writes(audit(), started)  # not even taken and given back in between
    assert await pod_names(kube, namespace) == pods_before
    drains = "\n".join(kured_log(started, node) for node in started.nodes)
    assert re.search(r"Dry run: would drain node \S+ \(.*\): would evict \d+ pods", drains)
    assert "The disruption budget web needs" in drains  # the PDB that would hold the drain
    assert "Acquired reboot lock" not in drains
    assert (await status(kube, sentinel_node))["reason"].endswith(f"(packages: {PACKAGES})")
    assert f'kured_reboot_reason{{node="{old_node}",reason="max-node-age"}} 1.0' in (
        await metrics(started, old_node)
    )
    evictions = [e for e in audit() if (e.get("objectRef") or {}).get("subresource") == "eviction"]
    ours = [e for e in evictions if e["objectRef"].get("namespace") == namespace]
    assert ours and all("dryRun=All" in e["requestURI"] for e in ours)


async def pod_names(kube: AsyncClient, namespace: str) -> set[str]:
    return {str(p.metadata.name) async for p in kube.list(Pod, namespace=namespace) if p.metadata}


async def unevictable(kube: AsyncClient, fleet: Fleet) -> str:
    """The workload with its web budget tightened so that no eviction is allowed."""
    namespace = await fleet.workload(stop_seconds=0.5)
    pdb = {
        "apiVersion": "policy/v1beta1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "maxUnavailable": 0},
    }
    await kube.apply(codecs.from_dict(pdb), field_manager="test", force=True)
    return namespace


# --- 4. pause and resume through kuredctl -------------------------------------------------


async def kuredctl(control_plane: ControlPlane, fleet: Fleet, *args: str) -> str:
    argv = ["--kubeconfig", str(control_plane.kubeconfig), "-n", fleet.kured_namespace, *args]
    result = await asyncio.to_thread(CliRunner().invoke, kuredctl_cli, argv)
    assert result.exit_code == 0, result.output
    return result.output


async def test_a_paused_fleet_waits_and_rolls_after_resume(
    fleet: FleetFactory, kube: AsyncClient, control_plane: ControlPlane, lock_backend: str
) -> None:
    paused = await start(fleet, 2, lock_backend)
    await kuredctl(control_plane, paused, "pause", "--reason", "e2e change freeze")
    paused.trigger()
    for node in paused.nodes:
        seen = await wait_status(kube, node, activity="paused")
        assert "e2e change freeze" in seen["blockedBy"]
    await assert_no_reboot(paused)
    assert not await lock_holders(kube, paused)
    assert "resumed kured cluster-wide" in await kuredctl(control_plane, paused, "resume")
    await wait_rolled(kube, paused)


async def resumed_at_once(
    kube: AsyncClient, control_plane: ControlPlane, paused: Fleet, *where: str
) -> None:
    """Pause (``where``: nothing for cluster-wide, or ``--node N``), make every node need a
    reboot, resume: the roll must be over well before the next ``--period`` (1m) would
    have started it."""
    await kuredctl(control_plane, paused, "pause", *where)
    paused.trigger()
    for node in paused.nodes:
        await wait_status(kube, node, activity="paused")
    await kuredctl(control_plane, paused, "resume", *where)
    await wait_rolled(kube, paused, within=40)


async def test_a_cluster_wide_resume_takes_effect_at_once(
    fleet: FleetFactory, kube: AsyncClient, control_plane: ControlPlane, lock_backend: str
) -> None:
    """The lease backend's lock watch sees only Leases: its agents also watch the
    DaemonSet's pause annotation."""
    paused = await start(fleet, 1, lock_backend, "--period=1m")
    await resumed_at_once(kube, control_plane, paused)


async def test_a_node_resume_takes_effect_at_once(
    fleet: FleetFactory, kube: AsyncClient, control_plane: ControlPlane
) -> None:
    """Each agent watches its own Node for ``kured.dev/paused``."""
    paused = await start(fleet, 1, "--period=1m")
    await resumed_at_once(kube, control_plane, paused, "--node", paused.nodes[0])


# --- 5. notifications for trouble ---------------------------------------------------------


async def test_blocked_too_long_is_told_to_every_url(
    fleet: FleetFactory, kube: AsyncClient, receiver: Receiver
) -> None:
    hook = f"json://127.0.0.1:{receiver.port}"
    blocked = await start(
        fleet,
        1,
        "--blocking-pod-selector=role=precious",
        "--notify-blocked-after=3s",
        f"--notify-url={hook}/ops",
        f"--notify-url={hook}/oncall",
        "--message-template-blocked=%s blocked {duration}: {reason} ({packages})",
    )
    node = blocked.nodes[0]
    await precious_pod(kube, blocked, node)
    blocked.trigger()
    text = await wait_message(receiver, "blocked")
    assert re.fullmatch(
        rf"{node} blocked [3-9]s: 1 blocking pods: \S+/precious \({PACKAGES}\)", text
    ), text
    await wait_until(lambda: _both(receiver), what="the message at both URLs", within=10)
    await asyncio.sleep(4)
    assert len([m for m in messages(receiver) if "blocked" in m]) == 2  # once per URL


async def test_a_restart_keeps_the_start_of_a_block(
    fleet: FleetFactory, kube: AsyncClient, receiver: Receiver
) -> None:
    """The blocked-too-long clock lived in the pod and started again with it: a node whose
    pod restarts more often than --notify-blocked-after was never told about. The start of
    the block is kept in kured.dev/status, so the restarted pod counts from it."""
    blocking = "--blocking-pod-selector=role=precious"
    blocked = await start(fleet, 1, blocking)
    node = blocked.nodes[0]
    await precious_pod(kube, blocked, node)
    blocked.trigger()
    began = await wait_status(kube, node, activity="blocked")
    await asyncio.sleep(6)
    hook = f"json://127.0.0.1:{receiver.port}"
    template = "--message-template-blocked=%s blocked for {duration}"
    await run(blocked, blocking, "--notify-blocked-after=5s", f"--notify-url={hook}", template)
    text = await wait_message(receiver, "blocked")
    lasted = parse_go_duration(text.rpartition(" ")[2])
    assert lasted >= timedelta(seconds=6), text  # since the block began, not the restart
    assert (await status(kube, node)).get("blockedSince") == began.get("blockedSince")
    assert (await status(kube, node)).get("blockedTold") is True


async def _both(receiver: Receiver) -> bool:
    paths = {p for p, body in receiver.received if "blocked" in str(body.get("message"))}
    return paths == {"/ops", "/oncall"}


async def test_drain_failure_names_the_budget(
    fleet: FleetFactory, kube: AsyncClient, receiver: Receiver, lock_backend: str
) -> None:
    started = await fleet(1)
    await unevictable(kube, started)
    await run(
        started,
        lock_backend,
        "--drain-timeout=3s",
        f"--notify-url=json://127.0.0.1:{receiver.port}/hook",
        "--message-template-drain=Draining {node} for {packages}",
    )
    node = started.nodes[0]
    started.trigger()
    failed = await wait_message(receiver, "failed", within=40)
    assert failed.startswith(f"Draining node {node} failed: drain of node {node} timed out")
    assert "The disruption budget web needs" in failed
    assert f"Draining {node} for {PACKAGES}" in messages(receiver)
    assert not started.reboots(node)


async def test_reboot_loop_is_told(
    fleet: FleetFactory, kube: AsyncClient, receiver: Receiver, lock_backend: str
) -> None:
    looping = await start(
        fleet,
        1,
        lock_backend,
        "--reboot-sentinel-command=true",  # the sentinel survives every reboot
        "--max-consecutive-reboots=1",
        f"--notify-url=json://127.0.0.1:{receiver.port}/hook",
    )
    node = looping.nodes[0]
    text = await wait_message(receiver, "not rebooting it again", within=60)
    assert text == (
        f"Node {node}: reboot loop: still required after 1 reboots in a row; not rebooting it again"
    )
    assert len(looping.reboots(node)) == 1
    assert not await lock_holders(kube, looping)  # it stopped without keeping a slot


async def test_gate_timeout_is_told(
    fleet: FleetFactory,
    kube: AsyncClient,
    receiver: Receiver,
    prometheus: str,
    lock_backend: str,
) -> None:
    gated = await start(
        fleet,
        1,
        lock_backend,
        f"--prometheus-url={prometheus}",
        IGNORE_ALERTS,
        "--post-reboot-gate-query=vector(1)",
        "--post-reboot-gate-timeout=2s",
        f"--notify-url=json://127.0.0.1:{receiver.port}/hook",
        "--message-template-gate-timeout={node} stuck after {duration}: {reason}",
    )
    node = gated.nodes[0]
    gated.trigger()
    text = await wait_message(receiver, "stuck after", within=60)
    assert re.fullmatch(
        rf"{node} stuck after \d+s: post-reboot gate timed out: gate query returned 1 series: "
        r"vector\(1\)",
        text,
    ), text
    assert await lock_holders(kube, gated) == [node]  # the lock is kept: the roll stops


# --- 6. --blocking-query and Alertmanager silences -----------------------------------------


@pytest.mark.parametrize(
    ("query", "blocks"), [("vector(1)", True), ("vector(1) == 0", False)], ids=["blocks", "empty"]
)
async def test_blocking_query(
    fleet: FleetFactory, kube: AsyncClient, prometheus: str, query: str, blocks: bool
) -> None:
    flags = [f"--prometheus-url={prometheus}", IGNORE_ALERTS, f"--blocking-query={query}"]
    started = await start(fleet, 1, *flags)
    node = started.nodes[0]
    started.trigger()
    if not blocks:
        await wait_rolled(kube, started, within=60)
        return
    await wait_log(started, node, f"Reboot blocked: blocking query returned 1 series: {query}")
    await assert_no_reboot(started, 3)
    assert 'reason="query"} 1.0' in await metrics(started, node)


@pytest.mark.parametrize(
    ("silenced", "blocker"),
    [
        (["AlwaysFiring", "MaintenanceWindow"], "SlowBurn"),
        (["AlwaysFiring", "MaintenanceWindow", "SlowBurn"], ""),
    ],
    ids=["pending-alert-still-blocks", "all-silenced-rolls"],
)
async def test_alertmanager_silences(
    fleet: FleetFactory,
    kube: AsyncClient,
    prometheus: str,
    *,
    alertmanager: Alertmanager,
    silenced: list[str],
    blocker: str,
) -> None:
    for name in silenced:
        alertmanager.silence(alertname=name)
    flags = [f"--prometheus-url={prometheus}", f"--alertmanager-url={alertmanager.url}"]
    started = await start(fleet, 1, *flags)
    node = started.nodes[0]
    started.trigger()
    if not blocker:
        await wait_rolled(kube, started, within=60)
        return
    await wait_log(started, node, f"Reboot blocked: alerts firing: {blocker}")
    await assert_no_reboot(started, 3)
