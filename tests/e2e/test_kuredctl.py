"""kuredctl against a real API server (the sandbox's control plane).

The cluster is arranged as the daemon would leave it: Nodes carrying
``kured.dev/status`` and ``kured.dev/progress``, a DaemonSet carrying the lock in
Go kured's literal format or lock Leases as ``--lock-backend=lease`` writes them,
Events from component ``kured``. Then the CLI runs
(in-process through click, or as the installed console script where the
terminal or kubectl matter) and the tests read its output and the objects it
changed. Every object has a name unique to its test and is deleted afterwards;
the DaemonSets select no node, so no pod is ever created for them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import pty
import secrets
import shutil
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner, Result
from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event, Namespace, Node, Secret, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import (
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
)

from kured.ctl.cli import cli
from kured.lease import GROUP_LABEL, LOCK_LABEL
from kured.lockformat import group_annotation, parse
from kured_testbed.api import wait_until
from kured_testbed.controlplane import ControlPlane, free_port, kubeconfig_text

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
LOCK = "weave.works/kured-node-lock"
NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
_numbers = itertools.count(1)


def go_entry(node: str, created: str = "2026-11-22T02:59:00.123456789Z", ttl: int = 0) -> str:
    """One lock entry exactly as Go kured 1.23 marshals it."""
    return (
        f'{{"nodeID":"{node}","metadata":{{"unschedulable":false}},'
        f'"created":"{created}","TTL":{ttl}}}'
    )


def go_multi(max_owners: int, *entries: str) -> str:
    return f'{{"maxOwners":{max_owners},"locks":[{",".join(entries)}]}}'


def agent_status(**fields: Any) -> str:
    """``kured.dev/status`` as the agent writes it."""
    value = {
        "rebootRequired": True,
        "reason": "sentinel /var/run/reboot-required exists",
        "windowOpen": True,
        "blockedBy": "",
        "activity": "waiting-for-lock",
        "lastReboot": "",
    }
    return json.dumps(value | fields, separators=(",", ":"))


class Setup:
    """Objects one test arranges as the daemon would have; deleted when the test ends."""

    def __init__(self, client: AsyncClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.prefix = f"ctl{next(_numbers)}-{secrets.token_hex(2)}"
        self._created: list[tuple[type[Any], str, str | None]] = []

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    async def daemonset(
        self, annotations: dict[str, str] | None = None, suffix: str = "kured"
    ) -> str:
        name = self.name(suffix)
        labels = {"app": name}
        body = {
            "metadata": {"name": name, "namespace": self.namespace, "annotations": annotations},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"kuredctl-test": "never"},
                        "containers": [{"name": "kured", "image": "kured:test"}],
                    },
                },
            },
        }
        await self.create(DaemonSet.from_dict(body), self.namespace)
        return name

    async def node(
        self, suffix: str, annotations: dict[str, str] | None = None, cordoned: bool = False
    ) -> str:
        name = self.name(suffix)
        body = {
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"unschedulable": cordoned},
        }
        await self.create(Node.from_dict(body), None)
        return name

    async def event(
        self, node: str, reason: str, name: str, *, component: str = "kured", at: str = NOW
    ) -> None:
        body = {
            "metadata": {"name": f"{node}.{name}", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": node, "apiVersion": "v1"},
            "reason": reason,
            "message": f"{reason} on {node}",
            "type": "Normal",
            "source": {"component": component, "host": node},
            "firstTimestamp": at,
            "lastTimestamp": at,
            "count": 1,
        }
        await self.create(Event.from_dict(body), "default")

    async def lease(self, ds: str, slot: str, holder: str = "", *, by_hand: bool = False) -> str:
        """The lock Lease ``<ds>-lock-<slot>`` as kured.lease writes it: held by ``holder``
        (renewed now, 60 s), free (no holder), or ``by_hand`` (a holder, no renewTime)."""
        name = f"{ds}-lock-{slot}"
        group = slot.rpartition("-")[0]
        spec: dict[str, Any] = {"holderIdentity": holder or None}
        if holder and not by_hand:
            renewed = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            spec |= {"renewTime": renewed, "acquireTime": renewed, "leaseDurationSeconds": 60}
        labels = {LOCK_LABEL: ds, GROUP_LABEL: group}
        body = {"metadata": {"name": name, "namespace": self.namespace, "labels": labels}}
        await self.create(Lease.from_dict({**body, "spec": spec}), self.namespace)
        return name

    async def lease_holders(self, ds: str) -> dict[str, str]:
        """Each lock Lease of ``ds`` and its holder ("" when free)."""
        leases = self.client.list(Lease, namespace=self.namespace, labels={LOCK_LABEL: ds})
        return {
            str(lease.metadata.name if lease.metadata else ""): (
                (lease.spec.holderIdentity if lease.spec else None) or ""
            )
            async for lease in leases
        }

    async def create(self, obj: Any, namespace: str | None) -> None:
        await self.client.create(obj)
        self._created.append((type(obj), obj.metadata.name, namespace))

    async def ds_annotations(self, name: str) -> dict[str, str]:
        ds = await self.client.get(DaemonSet, name, namespace=self.namespace)
        return dict((ds.metadata.annotations if ds.metadata else None) or {})

    async def annotate_ds(self, name: str, key: str, value: str) -> None:
        patch = {"metadata": {"annotations": {key: value}}}
        await self.client.patch(DaemonSet, name, patch, namespace=self.namespace)

    async def node_annotations(self, name: str) -> dict[str, str]:
        node = await self.client.get(Node, name)
        return dict((node.metadata.annotations if node.metadata else None) or {})

    async def cleanup(self) -> None:
        for kind, name, namespace in reversed(self._created):
            with contextlib.suppress(ApiError):
                await self.client.delete(kind, name, namespace=namespace)


@pytest.fixture(scope="module")
async def namespace(control_plane: ControlPlane) -> AsyncIterator[str]:
    """A namespace of this module's own for its DaemonSets."""
    name = f"kuredctl-{secrets.token_hex(3)}"
    async with control_plane.client() as client:
        await client.create(Namespace(metadata=ObjectMeta(name=name)))
        try:
            yield name
        finally:
            await client.delete(Namespace, name)


@pytest.fixture
async def setup(control_plane: ControlPlane, namespace: str) -> AsyncIterator[Setup]:
    async with control_plane.client() as client:
        arranged = Setup(client, namespace)
        try:
            yield arranged
        finally:
            await arranged.cleanup()


def _invoke(args: list[str], env: dict[str, str] | None) -> Result:
    return CliRunner().invoke(cli, args, env=env, prog_name="kuredctl")


async def kuredctl(
    control_plane: ControlPlane, *args: str, env: dict[str, str] | None = None
) -> Result:
    """The CLI in-process, on a thread of its own (it runs its own event loop)."""
    argv = ["--kubeconfig", str(control_plane.kubeconfig), *args]
    return await asyncio.to_thread(_invoke, argv, env)


async def refusal(control_plane: ControlPlane, *args: str) -> str:
    """The one line kuredctl prints when it refuses (exit 1)."""
    result = await kuredctl(control_plane, *args)
    assert result.exit_code == 1, result.output
    return result.stderr


def row(output: str, node: str) -> list[str]:
    """The cells of one table row (cells are separated by at least two spaces)."""
    line = next(line for line in output.splitlines() if line.startswith(f"{node} "))
    return [cell.strip() for cell in line.split("   ") if cell.strip()]


# -- status -------------------------------------------------------------------------------


async def test_status_table_and_json(control_plane: ControlPlane, setup: Setup) -> None:
    waiting = await setup.node("a", {"kured.dev/status": agent_status()})
    draining = await setup.node(
        "b",
        {
            "kured.dev/status": agent_status(
                activity="draining", lastReboot="2026-11-01T02:00:00Z"
            ),
            "kured.dev/progress": '{"phase":"draining","boot_id":"b-1",'
            '"unschedulable_before":false,"since":"2026-11-22T03:00:00Z"}',
        },
        cordoned=True,
    )
    blocked = await setup.node(
        "c",
        {
            "kured.dev/status": agent_status(
                windowOpen=False, blockedBy="pod db-0", activity="blocked"
            ),
            "kured.dev/paused": "disk swap",
        },
    )
    silent = await setup.node("d")
    ds = await setup.daemonset({LOCK: go_entry(draining)})
    env = {"KURED_DS_NAMESPACE": setup.namespace, "KURED_DS_NAME": ds}

    table = await kuredctl(control_plane, "status", env=env)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["DaemonSet:", f"{setup.namespace}/{ds}"]
    assert lines[1].split(None, 1) == ["Lock:", f"held by {draining} (single-owner format)"]
    assert lines[2].split() == ["Paused:", "no"]
    assert lines[4].split("   ")[0].strip() == "NODE"
    assert row(table.stdout, waiting) == [
        *(waiting, "yes", "open", "-", "-", "waiting-for-lock", "-", "no", "no")
    ]
    assert row(table.stdout, draining) == [
        *(draining, "yes", "open", "-", "held", "draining"),
        *("2026-11-01T02:00:00Z", "yes", "no"),
    ]
    assert row(table.stdout, blocked) == [
        *(blocked, "yes", "closed", "pod db-0", "-", "blocked", "-", "no", "yes")
    ]
    assert row(table.stdout, silent) == [silent, *["-"] * 6, "no", "no"]

    document = await kuredctl(control_plane, "status", "-o", "json", env=env)
    assert document.exit_code == 0, document.output
    report = json.loads(document.stdout)
    assert report["schemaVersion"] == 1
    assert report["daemonSet"] == {"namespace": setup.namespace, "name": ds}
    assert report["paused"] is None
    assert report["lock"]["format"] == "single"
    assert [h["nodeID"] for h in report["lock"]["holders"]] == [draining]
    assert report["lock"]["holders"][0]["created"] == "2026-11-22T02:59:00.123456Z"
    nodes = {n["name"]: n for n in report["nodes"]}
    assert nodes[draining]["status"]["activity"] == "draining"
    assert nodes[draining]["progress"] == "draining"
    assert (nodes[draining]["lock"], nodes[draining]["cordoned"]) == ("held", True)
    assert nodes[blocked]["paused"] == {"by": "", "at": "", "reason": "disk swap"}
    assert nodes[silent]["status"] is None
    assert nodes[silent]["phase"] is None


async def test_status_multi_lock_shows_holders_that_are_not_nodes(
    control_plane: ControlPlane, setup: Setup
) -> None:
    holder = await setup.node("a", {"kured.dev/status": agent_status(activity="rebooting")})
    ds = await setup.daemonset({LOCK: go_multi(3, go_entry(holder), go_entry("manual"))})
    result = await kuredctl(control_plane, "-n", setup.namespace, "--ds-name", ds, "status")
    assert result.exit_code == 0, result.output
    assert (
        f"held by {holder}, manual (not a node) (2 of 3 slots, multi-owner format)"
        in result.stdout.splitlines()[1]
    )
    assert row(result.stdout, holder)[4] == "held"
    assert row(result.stdout, "manual") == ["manual", "-", "-", "-", "held", *["-"] * 4]


async def test_status_shows_every_lock_groups_holders_with_their_real_ttl(
    control_plane: ControlPlane, setup: Setup
) -> None:
    """With --lock-group-label each group's lock is its own annotation, and kuredctl read only
    the base one; and a holder set by hand with a TTL read as expired, though the daemon
    never reclaims it."""
    zoned = await setup.node("a", {"kured.dev/status": agent_status(activity="draining")})
    other = await setup.node("b", {"kured.dev/status": agent_status(activity="rebooting")})
    by_hand = '{"nodeID":"manual","TTL":3600000000000}'
    zone_a, zone_b = group_annotation(LOCK, "zone-a"), group_annotation(LOCK, "Zone_B")
    ds = await setup.daemonset(
        {zone_a: go_entry(zoned), zone_b: go_multi(2, go_entry(other), by_hand)}
    )
    target = ("-n", setup.namespace, "--ds-name", ds)

    table = await kuredctl(control_plane, *target, "status")
    assert table.exit_code == 0, table.output
    header = [line.split(None, 2) for line in table.stdout.splitlines()[1:4]]
    assert header == [
        ["Lock:", "free"],
        ["Lock", "zone-a:", f"held by {zoned} (single-owner format)"],
        [
            "Lock",
            f"{zone_b.removeprefix(LOCK + '-')}:",
            f"held by {other}, manual (set by hand, not a node, TTL 1h0m0s) "
            "(2 of 2 slots, multi-owner format)",
        ],
    ]
    assert row(table.stdout, zoned)[4:6] == ["held", "draining"]
    assert row(table.stdout, other)[4:6] == ["held", "rebooting"]
    assert row(table.stdout, "manual") == ["manual", "-", "-", "-", "held", *["-"] * 4]

    document = await kuredctl(control_plane, *target, "status", "-o", "json")
    groups = json.loads(document.stdout)["groupLocks"]
    assert [(g["annotation"], [h["nodeID"] for h in g["holders"]]) for g in groups] == [
        (zone_a, [zoned]),
        (zone_b, [other, "manual"]),
    ]
    manual = groups[1]["holders"][1]
    assert (manual["created"], manual["ttlSeconds"], manual["expired"]) == (None, 3600, False)


async def test_status_with_a_custom_lock_annotation(
    control_plane: ControlPlane, setup: Setup
) -> None:
    ds = await setup.daemonset({"example.com/lock": go_entry("elsewhere"), LOCK: go_entry("x")})
    result = await kuredctl(
        control_plane,
        *("-n", setup.namespace, "--ds-name", ds, "status", "-o", "json"),
        env={"KURED_LOCK_ANNOTATION": "example.com/lock"},
    )
    assert result.exit_code == 0, result.output
    lock = json.loads(result.stdout)["lock"]
    assert lock["annotation"] == "example.com/lock"
    assert [h["nodeID"] for h in lock["holders"]] == ["elsewhere"]


async def test_status_shows_the_lock_leases(control_plane: ControlPlane, setup: Setup) -> None:
    draining = await setup.node("a", {"kured.dev/status": agent_status(activity="draining")})
    waiting = await setup.node("b", {"kured.dev/status": agent_status()})
    ds = await setup.daemonset()
    await setup.lease(ds, "0", draining)
    await setup.lease(ds, "1")
    await setup.lease(ds, "zone-b-0", "manual", by_hand=True)
    other = await setup.daemonset(suffix="other")  # its Leases in the namespace are not ours
    await setup.lease(other, "0", "elsewhere")
    target = ("-n", setup.namespace, "--ds-name", ds)

    table = await kuredctl(control_plane, *target, "status")
    assert table.exit_code == 0, table.output
    header = [line.split(None, 1) for line in table.stdout.splitlines()[1:4]]
    assert header == [
        ["Lock:", "free"],
        ["Leases:", f"held by {draining}, manual (set by hand, not a node) (2 of 3 Leases)"],
        ["Paused:", "no"],
    ]
    assert row(table.stdout, draining)[4:6] == ["held", "draining"]
    assert row(table.stdout, waiting)[4:6] == ["-", "waiting-for-lock"]
    assert row(table.stdout, "manual") == ["manual", "-", "-", "-", "held", *["-"] * 4]
    assert "elsewhere" not in table.stdout

    document = await kuredctl(control_plane, *target, "status", "-o", "json")
    leases = json.loads(document.stdout)["leases"]
    assert (leases["count"], leases["unreadable"]) == (3, None)
    assert [(h["lease"], h["group"], h["nodeID"], h["ttlSeconds"]) for h in leases["holders"]] == [
        (f"{ds}-lock-0", "", draining, 60),
        (f"{ds}-lock-zone-b-0", "zone-b", "manual", 0),
    ]
    assert leases["holders"][0]["renewed"]
    assert leases["holders"][1]["renewed"] is None


# -- pause / resume -----------------------------------------------------------------------


async def test_pause_and_resume_cluster_wide(control_plane: ControlPlane, setup: Setup) -> None:
    ds = await setup.daemonset({LOCK: go_entry("n1"), "keep": "me"})
    target = ("-n", setup.namespace, "--ds-name", ds)

    paused = await kuredctl(control_plane, *target, "pause", "--reason", "change freeze")
    assert paused.exit_code == 0, paused.output
    assert paused.stdout.startswith(f"paused kured cluster-wide (DaemonSet {setup.namespace}/")
    annotations = await setup.ds_annotations(ds)
    note = json.loads(annotations["kured.dev/paused"])
    assert note["reason"] == "change freeze"
    assert note["by"]
    assert datetime.strptime(note["at"], "%Y-%m-%dT%H:%M:%SZ")
    assert annotations[LOCK] == go_entry("n1")
    assert annotations["keep"] == "me"

    status = await kuredctl(control_plane, *target, "status")
    assert status.stdout.splitlines()[2].split(None, 2)[:2] == ["Paused:", "yes,"]
    assert "change freeze" in status.stdout.splitlines()[2]

    resumed = await kuredctl(control_plane, *target, "resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resumed kured cluster-wide" in resumed.stdout
    annotations = await setup.ds_annotations(ds)
    assert "kured.dev/paused" not in annotations
    assert annotations[LOCK] == go_entry("n1")

    again = await kuredctl(control_plane, *target, "resume")
    assert again.exit_code == 0
    assert "was not paused cluster-wide" in again.stdout


async def test_pause_and_resume_one_node(control_plane: ControlPlane, setup: Setup) -> None:
    node = await setup.node("a", {"kured.dev/status": agent_status()})
    other = await setup.node("b")
    ds = await setup.daemonset()
    target = ("-n", setup.namespace, "--ds-name", ds)

    paused = await kuredctl(control_plane, *target, "pause", "--node", node, "--reason", "disk")
    assert paused.exit_code == 0, paused.output
    assert paused.stdout.startswith(f"paused kured on node {node}")
    annotations = await setup.node_annotations(node)
    assert json.loads(annotations["kured.dev/paused"])["reason"] == "disk"
    assert annotations["kured.dev/status"] == agent_status()
    assert "kured.dev/paused" not in await setup.node_annotations(other)
    assert "kured.dev/paused" not in await setup.ds_annotations(ds)

    status = await kuredctl(control_plane, *target, "status")
    assert row(status.stdout, node)[-1] == "yes"
    assert row(status.stdout, other)[-1] == "no"

    resumed = await kuredctl(control_plane, *target, "resume", "--node", node)
    assert resumed.exit_code == 0, resumed.output
    assert "disk" in resumed.stdout
    annotations = await setup.node_annotations(node)
    assert "kured.dev/paused" not in annotations
    assert annotations["kured.dev/status"] == agent_status()


async def test_pause_of_an_unknown_node(control_plane: ControlPlane, setup: Setup) -> None:
    ds = await setup.daemonset()
    result = await kuredctl(
        control_plane, "-n", setup.namespace, "--ds-name", ds, "pause", "--node", "no-such-node"
    )
    assert (result.exit_code, result.stderr) == (1, "kuredctl: Node no-such-node not found\n")


# -- unlock -------------------------------------------------------------------------------


async def test_unlock_yes_removes_the_whole_lock(control_plane: ControlPlane, setup: Setup) -> None:
    ds = await setup.daemonset({LOCK: go_entry("n1"), "keep": "me"})
    target = ("-n", setup.namespace, "--ds-name", ds)
    result = await kuredctl(control_plane, *target, "unlock", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout == "removed the lock (held by n1 (not a node) (single-owner format))\n"
    annotations = await setup.ds_annotations(ds)
    assert LOCK not in annotations
    assert annotations["keep"] == "me"

    again = await kuredctl(control_plane, *target, "unlock", "--yes")
    assert (again.exit_code, again.stdout) == (0, "the lock is free; nothing to do\n")


async def test_unlock_node_frees_its_lock_group_slot(
    control_plane: ControlPlane, setup: Setup
) -> None:
    """With --lock-group-label a holder's entry is in its group's annotation, which unlock
    --node did not look at: it said the holder "does not hold the lock"."""
    holder, other = await setup.node("a"), await setup.node("b")
    zone_a, zone_b = group_annotation(LOCK, "zone-a"), group_annotation(LOCK, "zone-b")
    ds = await setup.daemonset({zone_a: go_entry(holder), zone_b: go_entry(other)})
    target = ("-n", setup.namespace, "--ds-name", ds)
    result = await kuredctl(control_plane, *target, "unlock", "--node", holder, "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"removed {holder}'s entry from group zone-a's lock\n"
    annotations = await setup.ds_annotations(ds)
    assert parse(annotations.get(zone_a)).holders() == []
    assert parse(annotations[zone_b]).holders() == [other]

    whole = await kuredctl(control_plane, *target, "unlock", "--yes")
    assert whole.exit_code == 0, whole.output
    assert "removed group zone-b's lock" in whole.stdout
    assert zone_b not in await setup.ds_annotations(ds)


async def test_unlock_node_removes_only_its_entry(
    control_plane: ControlPlane, setup: Setup
) -> None:
    first, second = await setup.node("a"), await setup.node("b")
    ds = await setup.daemonset({LOCK: go_multi(3, go_entry(first), go_entry(second))})
    target = ("-n", setup.namespace, "--ds-name", ds)
    result = await kuredctl(control_plane, *target, "unlock", "--node", first, "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"removed {first}'s entry from the lock\n"
    written = (await setup.ds_annotations(ds))[LOCK]
    assert json.loads(written)["maxOwners"] == 3
    assert parse(written) == parse(go_multi(3, go_entry(second)))

    assert await refusal(control_plane, *target, "unlock", "--node", first, "--yes") == (
        f"kuredctl: {first} does not hold the lock "
        f"(held by {second} (1 of 3 slots, multi-owner format))\n"
    )


async def test_unlock_node_of_a_single_lock_removes_the_annotation(
    control_plane: ControlPlane, setup: Setup
) -> None:
    ds = await setup.daemonset({LOCK: go_entry("manual")})
    result = await kuredctl(
        control_plane, "-n", setup.namespace, "--ds-name", ds, "unlock", "--node", "manual", "-y"
    )
    assert result.exit_code == 0, result.output
    assert LOCK not in await setup.ds_annotations(ds)


async def test_unlock_without_yes_and_without_a_terminal_refuses(
    control_plane: ControlPlane, setup: Setup
) -> None:
    ds = await setup.daemonset({LOCK: go_entry("n1")})
    result = await kuredctl(control_plane, "-n", setup.namespace, "--ds-name", ds, "unlock")
    assert result.exit_code == 1
    assert "stdin is not a terminal; add --yes" in result.stderr
    assert (await setup.ds_annotations(ds))[LOCK] == go_entry("n1")


async def test_unlock_removes_an_unreadable_lock(control_plane: ControlPlane, setup: Setup) -> None:
    ds = await setup.daemonset({LOCK: "locked by bob"})
    target = ("-n", setup.namespace, "--ds-name", ds)
    one = await kuredctl(control_plane, *target, "unlock", "--node", "bob", "--yes")
    assert one.exit_code == 1
    assert one.stderr.startswith("kuredctl: the lock is unreadable (lock annotation is not JSON")
    assert one.stderr.endswith("run unlock without --node to remove it\n")

    status = await kuredctl(control_plane, *target, "status")
    assert status.stdout.splitlines()[1].startswith("Lock:        unreadable (")

    whole = await kuredctl(control_plane, *target, "unlock", "--yes")
    assert whole.exit_code == 0, whole.output
    assert whole.stdout.startswith("removed the lock (unreadable (")
    assert LOCK not in await setup.ds_annotations(ds)


async def test_unlock_node_frees_only_its_lease(control_plane: ControlPlane, setup: Setup) -> None:
    first, second = await setup.node("a"), await setup.node("b")
    ds = await setup.daemonset({LOCK: go_entry(second)})
    zero, one = await setup.lease(ds, "0", first), await setup.lease(ds, "1", second)
    target = ("-n", setup.namespace, "--ds-name", ds)
    result = await kuredctl(control_plane, *target, "unlock", "--node", first, "--yes")
    assert (result.exit_code, result.stdout) == (0, f"freed {first}'s lock Lease\n")
    assert await setup.lease_holders(ds) == {zero: "", one: second}
    assert (await setup.ds_annotations(ds))[LOCK] == go_entry(second)

    assert await refusal(control_plane, *target, "unlock", "--node", first, "--yes") == (
        f"kuredctl: {first} does not hold the lock (held by {second} (single-owner format); "
        f"Leases: held by {second} (1 of 2 Leases))\n"
    )


async def test_unlock_yes_frees_the_annotation_and_every_lease(
    control_plane: ControlPlane, setup: Setup
) -> None:
    holder = await setup.node("a")
    ds = await setup.daemonset({LOCK: go_entry("n1")})
    zero = await setup.lease(ds, "0", holder)
    manual = await setup.lease(ds, "zone-b-0", "manual", by_hand=True)
    target = ("-n", setup.namespace, "--ds-name", ds)
    result = await kuredctl(control_plane, *target, "unlock", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "removed the lock (held by n1 (not a node) (single-owner format)); "
        f"freed the lock Leases of {holder}, manual\n"
    )
    assert await setup.lease_holders(ds) == {zero: "", manual: ""}
    assert LOCK not in await setup.ds_annotations(ds)

    again = await kuredctl(control_plane, *target, "unlock", "--yes")
    assert (again.exit_code, again.stdout) == (0, "the lock is free; nothing to do\n")


class Terminal:
    """The installed ``kuredctl`` with its stdin on a pseudo-terminal, as a person runs it."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int) -> None:
        self.proc = proc
        self.master = master

    @classmethod
    async def start(cls, *argv: str) -> Terminal:
        master, slave = pty.openpty()
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "kuredctl"),
            *argv,
            stdin=slave,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        os.close(slave)
        return cls(proc, master)

    async def prompt(self) -> str:
        assert self.proc.stdout is not None
        shown = await asyncio.wait_for(self.proc.stdout.readuntil(b"[y/N]: "), 20)
        return shown.decode()

    async def answer(self, text: str) -> tuple[int, str, str]:
        os.write(self.master, text.encode() + b"\n")
        out, err = await asyncio.wait_for(self.proc.communicate(), 20)
        os.close(self.master)
        return cast(int, self.proc.returncode), out.decode(), err.decode()


async def test_unlock_asks_on_a_terminal(control_plane: ControlPlane, setup: Setup) -> None:
    ds = await setup.daemonset({LOCK: go_entry("n1")})
    argv = ("--kubeconfig", str(control_plane.kubeconfig), "-n", setup.namespace, "--ds-name", ds)

    declined = await Terminal.start(*argv, "unlock")
    shown = await declined.prompt()
    assert f"Lock {LOCK} on DaemonSet {setup.namespace}/{ds}: held by n1" in shown
    assert shown.endswith("Remove the whole lock? [y/N]: ")
    code, _, err = await declined.answer("n")
    assert (code, err) == (1, "kuredctl: not confirmed; nothing changed\n")
    assert (await setup.ds_annotations(ds))[LOCK] == go_entry("n1")

    accepted = await Terminal.start(*argv, "unlock")
    await accepted.prompt()
    code, out, _ = await accepted.answer("y")
    assert (code, out.splitlines()[-1]) == (
        0,
        "removed the lock (held by n1 (not a node) (single-owner format))",
    )
    assert LOCK not in await setup.ds_annotations(ds)


async def test_unlock_never_removes_a_lock_that_changed_while_asking(
    control_plane: ControlPlane, setup: Setup
) -> None:
    ds = await setup.daemonset({LOCK: go_entry("n1")})
    argv = ("--kubeconfig", str(control_plane.kubeconfig), "-n", setup.namespace, "--ds-name", ds)
    terminal = await Terminal.start(*argv, "unlock")
    await terminal.prompt()
    await setup.annotate_ds(ds, LOCK, go_entry("n2"))  # n1 released; n2 took the lock
    code, _, err = await terminal.answer("y")
    assert code == 1
    assert err.startswith("kuredctl: the lock changed meanwhile (now ")
    assert err.endswith("nothing removed, run unlock again\n")
    assert (await setup.ds_annotations(ds))[LOCK] == go_entry("n2")


async def test_unlock_never_frees_leases_that_changed_while_asking(
    control_plane: ControlPlane, setup: Setup
) -> None:
    ds = await setup.daemonset()
    zero, one = await setup.lease(ds, "0", "n1"), await setup.lease(ds, "1")
    argv = ("--kubeconfig", str(control_plane.kubeconfig), "-n", setup.namespace, "--ds-name", ds)
    terminal = await Terminal.start(*argv, "unlock")
    shown = await terminal.prompt()
    assert f"Lock Leases of DaemonSet {setup.namespace}/{ds}: held by n1 (not a node)" in shown
    patch = {"spec": {"holderIdentity": "n2"}}  # n2 took the free slot
    await setup.client.patch(Lease, one, patch, namespace=setup.namespace)
    code, _, err = await terminal.answer("y")
    assert code == 1
    assert err.startswith("kuredctl: the lock Leases changed meanwhile (now held by n1")
    assert err.endswith("no Lease freed, run unlock again\n")
    assert await setup.lease_holders(ds) == {zero: "n1", one: "n2"}


# -- history ------------------------------------------------------------------------------


async def test_history_lists_kured_events_oldest_first(
    control_plane: ControlPlane, setup: Setup
) -> None:
    node, other = await setup.node("a"), await setup.node("b")
    # Written in this order within one second; the names sort the other way round.
    await setup.event(node, "LockAcquired", "c", at="2026-11-22T02:00:00Z")
    await setup.event(node, "Draining", "b", at="2026-11-22T02:00:00Z")
    await setup.event(node, "Rebooting", "a", at="2026-11-22T02:00:00Z")
    await setup.event(node, "Rebooted", "d", at="2026-11-22T02:05:00Z")
    await setup.event(node, "NodeReady", "e", component="kubelet", at="2026-11-22T02:06:00Z")
    await setup.event(other, "RebootRequired", "a", at="2026-11-22T01:00:00Z")

    result = await kuredctl(control_plane, "history", "--node", node)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIME", "NODE", "REASON", "MESSAGE"]
    assert [line.split()[2] for line in lines[1:]] == [
        "LockAcquired",
        "Draining",
        "Rebooting",
        "Rebooted",
    ]
    assert lines[-1].split(None, 3) == [
        "2026-11-22T02:05:00Z",
        node,
        "Rebooted",
        f"Rebooted on {node}",
    ]

    limited = await kuredctl(control_plane, "history", "--node", node, "--limit", "2", "-o", "json")
    assert limited.exit_code == 0, limited.output
    document = json.loads(limited.stdout)
    assert [(e["reason"], e["node"]) for e in document["events"]] == [
        ("Rebooting", node),
        ("Rebooted", node),
    ]
    assert document["events"][1] == {
        "time": "2026-11-22T02:05:00Z",
        "node": node,
        "reason": "Rebooted",
        "message": f"Rebooted on {node}",
        "type": "Normal",
        "count": 1,
    }

    everything = await kuredctl(control_plane, "history", "-o", "json")
    mine = [
        (e["node"], e["reason"])
        for e in json.loads(everything.stdout)["events"]
        if e["node"] in (node, other)
    ]
    assert mine == [
        (other, "RebootRequired"),
        (node, "LockAcquired"),
        (node, "Draining"),
        (node, "Rebooting"),
        (node, "Rebooted"),
    ]


# -- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["status"], ["pause"], ["resume"], ["unlock", "--yes"], ["unlock", "-y", "--node", "n1"]],
)
async def test_missing_daemonset_is_one_line(
    control_plane: ControlPlane, namespace: str, command: list[str]
) -> None:
    result = await kuredctl(control_plane, "-n", namespace, "--ds-name", "absent", *command)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"kuredctl: DaemonSet {namespace}/absent not found; is kured installed? use -n/--ds-name\n"
    )


async def test_default_daemonset_location_is_kube_system_kured(control_plane: ControlPlane) -> None:
    result = await kuredctl(control_plane, "status")
    if result.exit_code == 0:  # another test of this session installed kured there
        assert "DaemonSet:   kube-system/kured" in result.stdout
    else:
        assert "DaemonSet kube-system/kured not found" in result.stderr


async def test_unreachable_api_server_is_one_line(
    tmp_path: Path, control_plane: ControlPlane
) -> None:
    port = free_port()
    ca_pem = (control_plane.state.root / "certs" / "apiserver.crt").read_bytes()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text(f"https://127.0.0.1:{port}", ca_pem, "token", "nobody"))
    for command in (["status"], ["history"], ["pause"], ["unlock", "--yes"]):
        result = await asyncio.to_thread(_invoke, ["--kubeconfig", str(kubeconfig), *command], None)
        assert result.exit_code == 1
        assert result.stderr.startswith(
            f"kuredctl: cannot reach the API server at https://127.0.0.1:{port}: "
        )
        assert result.stderr.count("\n") == 1


async def test_forbidden_by_rbac_is_one_line(
    tmp_path: Path, control_plane: ControlPlane, setup: Setup
) -> None:
    ds = await setup.daemonset({LOCK: go_entry("n1")})
    token = await service_account_token(setup, setup.name("viewer"))
    ca_pem = (control_plane.state.root / "certs" / "apiserver.crt").read_bytes()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text(control_plane.server, ca_pem, token, "viewer"))
    argv = ["--kubeconfig", str(kubeconfig), "-n", setup.namespace, "--ds-name", ds]
    for command in (["status"], ["history"], ["unlock", "--yes"]):
        result = await asyncio.to_thread(_invoke, [*argv, *command], None)
        assert result.exit_code == 1
        assert result.stderr.startswith("kuredctl: permission denied: ")
        assert "forbidden" in result.stderr
        assert result.stderr.count("\n") == 1
    assert (await setup.ds_annotations(ds))[LOCK] == go_entry("n1")


async def test_status_without_the_right_to_list_leases_says_so(
    tmp_path: Path, control_plane: ControlPlane, setup: Setup
) -> None:
    """A role written before --lock-backend=lease (DaemonSets and Nodes, no Leases) still
    shows the annotation lock; the Leases line says why it cannot show them."""
    ds = await setup.daemonset({LOCK: go_entry("n1")})
    account = setup.name("reader")
    token = await service_account_token(setup, account)
    await grant(setup, account, Role, {"apps": "daemonsets"}, setup.namespace)
    await grant(setup, account, ClusterRole, {"": "nodes"}, None)
    ca_pem = (control_plane.state.root / "certs" / "apiserver.crt").read_bytes()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_text(control_plane.server, ca_pem, token, account))
    argv = ["--kubeconfig", str(kubeconfig), "-n", setup.namespace, "--ds-name", ds, "status"]

    async def allowed() -> Result | None:
        result = await asyncio.to_thread(_invoke, argv, None)
        return result if result.exit_code == 0 else None  # until RBAC has caught up

    result = await wait_until(allowed, what="status with the reader's role", within=20)
    lock, leases = (line.split(None, 1)[1] for line in result.stdout.splitlines()[1:3])
    assert lock == "held by n1 (not a node) (single-owner format)"
    assert leases.startswith("unreadable (permission denied: ")
    assert 'cannot list resource "leases"' in leases


async def grant(
    setup: Setup,
    account: str,
    kind: type[Role] | type[ClusterRole],
    resources: dict[str, str],
    namespace: str | None,
) -> None:
    """Read access (get, list) to ``{api group: resource}`` for the ServiceAccount."""
    binding = RoleBinding if kind is Role else ClusterRoleBinding
    meta = {"name": account, "namespace": namespace}
    rules = [
        {"apiGroups": [g], "resources": [r], "verbs": ["get", "list"]} for g, r in resources.items()
    ]
    subject = {"kind": "ServiceAccount", "name": account, "namespace": setup.namespace}
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": kind.__name__, "name": account}
    await setup.create(kind.from_dict({"metadata": meta, "rules": rules}), namespace)
    body = {"metadata": meta, "subjects": [subject], "roleRef": ref}
    await setup.create(binding.from_dict(body), namespace)


async def service_account_token(setup: Setup, name: str) -> str:
    """A ServiceAccount with no rights; its token from the Secret the token controller makes."""
    await setup.create(
        ServiceAccount.from_dict({"metadata": {"name": name, "namespace": setup.namespace}}),
        setup.namespace,
    )
    for _ in range(100):
        async for secret in setup.client.list(Secret, namespace=setup.namespace):
            annotations = (secret.metadata.annotations if secret.metadata else None) or {}
            if annotations.get("kubernetes.io/service-account.name") == name and secret.data:
                return base64.b64decode(secret.data["token"]).decode()
        await asyncio.sleep(0.2)
    raise AssertionError(f"no token Secret for ServiceAccount {name}")


# -- as installed ---------------------------------------------------------------------------


async def test_kubectl_runs_it_as_a_plugin(control_plane: ControlPlane, setup: Setup) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    ds = await setup.daemonset({LOCK: go_entry("n1")})
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = await asyncio.create_subprocess_exec(
        kubectl,
        *("kured", "--kubeconfig", str(control_plane.kubeconfig), "-n", setup.namespace),
        *("--ds-name", ds, "status"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "held by n1 (not a node) (single-owner format)" in out.decode()

    bad = await asyncio.create_subprocess_exec(
        kubectl, "kured", "--bogus", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(bad.communicate(), 30)
    assert bad.returncode == 2
    assert err.decode().startswith("kubectl kured: No such option '--bogus'.")
