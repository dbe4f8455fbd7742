"""The sandbox itself: a real control plane whose simulated nodes behave enough like kubelets
for kured's promises (PDBs honoured, nothing left cordoned, reboots observed) to be tested."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, Pod
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding

from kured_testbed import procs
from kured_testbed.api import Fleet, FleetFactory, wait_until
from kured_testbed.controlplane import ADMIN_USER, ControlPlane
from kured_testbed.fleet import fleet_nodes, node_ready
from kured_testbed.kinds import PodDisruptionBudget, eviction
from kured_testbed.state import FLEET_LABEL

pytestmark = pytest.mark.e2e

ZONE = "topology.kubernetes.io/zone"


def pod_ready(pod: Pod) -> bool:
    status = pod.status
    if status is None or status.phase != "Running":
        return False
    ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
    return ready and all(c.ready for c in status.containerStatuses or [])


async def pods(kube: AsyncClient, namespace: str, app: str | None = None) -> list[Pod]:
    listing = kube.list(Pod, namespace=namespace, labels={"app": app} if app else None)
    return [pod async for pod in listing]


def name_of(obj: Pod | Node) -> str:
    assert obj.metadata is not None
    return str(obj.metadata.name)


async def pdb_status(kube: AsyncClient, name: str, namespace: str) -> dict[str, Any]:
    """The PDB's status once the disruption controller has computed it."""

    async def computed() -> dict[str, Any]:
        pdb = await kube.get(PodDisruptionBudget, name, namespace=namespace)
        status: dict[str, Any] = pdb.get("status") or {}
        return status if status.get("observedGeneration") else {}

    return await wait_until(computed, what=f"status of PDB {name}")


async def node(kube: AsyncClient, name: str) -> Node:
    return await kube.get(Node, name)


def boot_id(node: Node) -> str:
    assert node.status is not None and node.status.nodeInfo is not None
    return node.status.nodeInfo.bootID


# --- nodes ---------------------------------------------------------------------------------


async def test_nodes_go_ready_with_labels_zones_leases_and_boot_ids(
    fleet: FleetFactory, kube: AsyncClient
) -> None:
    sim = await fleet(nodes=4, zones=3)
    nodes = {str(n.metadata.name): n for n in await fleet_nodes(kube, sim.name) if n.metadata}
    assert sorted(nodes) == sorted(sim.nodes)
    zones = []
    for name, each in nodes.items():
        assert node_ready(each)
        assert each.metadata is not None and each.metadata.labels is not None
        assert each.metadata.labels["kubernetes.io/hostname"] == name
        assert each.metadata.labels[FLEET_LABEL] == sim.name
        zones.append(each.metadata.labels[ZONE])
        assert boot_id(each) == sim.host(name).boot_id()
        lease = await kube.get(Lease, name, namespace="kube-node-lease")
        assert lease.spec is not None and lease.spec.holderIdentity == name
    assert sorted(zones) == ["zone-a", "zone-a", "zone-b", "zone-c"]


# --- pods and PDBs -------------------------------------------------------------------------


async def test_workload_pods_are_scheduled_onto_the_fleet_and_become_ready(
    fleet: FleetFactory, kube: AsyncClient
) -> None:
    sim = await fleet(nodes=3)
    namespace = await sim.workload()
    running = await pods(kube, namespace)
    # web: one per node, db: 2, cache (emptyDir): 1, standalone (unmanaged): 1
    assert len(running) == 7
    for pod in running:
        assert pod.spec is not None and pod.spec.nodeName in sim.nodes
        assert pod_ready(pod)
    assert len({pod.spec.nodeName for pod in running if pod.spec}) > 1


async def test_pdb_disruptions_allowed_comes_from_the_disruption_controller(
    fleet: FleetFactory, kube: AsyncClient
) -> None:
    sim = await fleet(nodes=3)
    namespace = await sim.workload()
    web = await pdb_status(kube, "web", namespace)  # maxUnavailable: 1 of 3
    assert (web["currentHealthy"], web["desiredHealthy"], web["disruptionsAllowed"]) == (3, 2, 1)
    db = await pdb_status(kube, "db", namespace)  # minAvailable: 1 of 2
    assert (db["currentHealthy"], db["desiredHealthy"], db["disruptionsAllowed"]) == (2, 1, 1)


async def test_an_eviction_that_would_break_the_pdb_gets_429(
    fleet: FleetFactory, kube: AsyncClient
) -> None:
    sim = await fleet(nodes=2)
    namespace = await sim.workload()
    await pdb_status(kube, "web", namespace)  # allows one disruption
    web = name_of((await pods(kube, namespace, "web"))[0])
    await kube.create(eviction(web, namespace), web, namespace=namespace)

    await kube.patch(PodDisruptionBudget, "db", {"spec": {"minAvailable": 2}}, namespace=namespace)

    async def no_disruption_allowed() -> bool:
        status = await pdb_status(kube, "db", namespace)
        return bool(status["observedGeneration"] == 2 and status["disruptionsAllowed"] == 0)

    await wait_until(no_disruption_allowed, what="db PDB at minAvailable 2")
    db = name_of((await pods(kube, namespace, "db"))[0])
    with pytest.raises(ApiError) as refused:
        await kube.create(eviction(db, namespace), db, namespace=namespace)
    assert refused.value.status.code == 429
    assert "disruption budget" in str(refused.value.status.message)


async def test_graceful_deletion_ends_when_the_pod_stops_not_at_the_grace_period(
    fleet: FleetFactory, kube: AsyncClient
) -> None:
    sim = await fleet(nodes=1)
    namespace = await sim.workload(stop_seconds=1.0)
    began = time.monotonic()
    await kube.delete(Pod, "standalone", namespace=namespace)  # grace period: 30 s

    async def gone() -> bool:
        return not [
            p for p in await pods(kube, namespace) if p.metadata and p.metadata.name == "standalone"
        ]

    await wait_until(gone, what="standalone pod deleted", within=15)
    assert 0.9 <= time.monotonic() - began < 10


# --- reboots -------------------------------------------------------------------------------


async def test_a_simulated_reboot_changes_the_boot_id_and_the_node_returns_ready(
    fleet: FleetFactory, kube: AsyncClient
) -> None:
    sim = await fleet(nodes=2, reboot_seconds=1.5)
    namespace = await sim.workload()
    by_command, by_signal = sim.nodes
    sim.trigger()
    before = {name: boot_id(await node(kube, name)) for name in sim.nodes}
    assert all(sim.host(name).reboot_required() for name in sim.nodes)

    # What kured's two reboot methods do on a simulated host:
    sim.host(by_command).dir.reboot_requested.write_text(json.dumps({"method": "command"}))
    os.kill(int(sim.host(by_signal).dir.init_pid.read_text()), 39)

    async def all_not_ready() -> bool:
        return not any([node_ready(await node(kube, name)) for name in sim.nodes])

    await wait_until(all_not_ready, what="nodes NotReady during the reboot", within=5)

    async def back_with_new_boot() -> bool:
        nodes = [await node(kube, name) for name in sim.nodes]
        return all(node_ready(n) and boot_id(n) != before[name_of(n)] for n in nodes)

    await wait_until(back_with_new_boot, what="nodes Ready with new boot ids", within=20)
    for name in sim.nodes:
        assert not sim.host(name).reboot_required()
        assert sim.host(name).boot_id() == boot_id(await node(kube, name))
        [record] = sim.reboots(name)
        assert record["from"] == before[name]
    assert "signal 39" in sim.reboots(by_signal)[0]["reason"]

    async def pods_restarted() -> bool:
        current = await pods(kube, namespace)
        statuses = [c for p in current if p.status for c in p.status.containerStatuses or []]
        return all(pod_ready(p) for p in current) and any(c.restartCount for c in statuses)

    await wait_until(pods_restarted, what="pods Running again after the reboot", within=10)


async def test_the_audit_log_records_the_cordon_patch(
    fleet: FleetFactory, kube: AsyncClient, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    sim = await fleet(nodes=1)
    name = sim.nodes[0]
    await kube.patch(Node, name, {"spec": {"unschedulable": True}})

    async def cordon_events() -> list[dict[str, Any]]:
        return [
            event
            for event in audit()
            if event["verb"] == "patch"
            and event["stage"] == "ResponseComplete"
            and event["user"]["username"] == ADMIN_USER
            and event["objectRef"].get("resource") == "nodes"
            and event["objectRef"].get("name") == name
            and "subresource" not in event["objectRef"]
        ]

    [event] = await wait_until(cordon_events, what="cordon in the audit log", within=5)
    assert event["requestObject"] == {"spec": {"unschedulable": True}}
    assert event["responseStatus"]["code"] == 200


# --- daemons -------------------------------------------------------------------------------

# A stand-in daemon: records what it was given, then idles.
RECORDER = (
    "import json, os, sys, time\n"
    "dir = os.environ['KURED_SANDBOX_NODE_DIR']\n"
    "seen = {'argv': sys.argv[1:], 'kubeconfig': os.environ.get('KUBECONFIG')}\n"
    "open(os.path.join(dir, 'seen.json'), 'w').write(json.dumps(seen))\n"
    "time.sleep(3600)\n"
)


async def recorded(sim: Fleet, name: str) -> dict[str, Any]:
    """What the stand-in daemon on name recorded."""

    async def read() -> dict[str, Any] | None:
        try:
            record: dict[str, Any] = json.loads((sim.host(name).dir.path / "seen.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return record

    return await wait_until(read, what=f"the daemon on {name} ran")


async def wait_daemon(sim: Fleet, name: str, not_pid: int | None = None) -> int:
    async def started() -> int | None:
        pid = sim.daemon_pid(name)
        return pid if pid != not_pid else None

    return await wait_until(started, what=f"daemon on {name}", within=15)


async def test_one_daemon_per_node_restarted_after_a_crash_and_after_a_reboot(
    fleet: FleetFactory,
) -> None:
    sim = await fleet(nodes=2, reboot_seconds=0.5)
    crashing, rebooting = sim.nodes
    await sim.run_kured([sys.executable, "-c", RECORDER, "{node}", "{node_dir}"], raw=True)
    pids = {name: await wait_daemon(sim, name) for name in sim.nodes}
    assert len(set(pids.values())) == 2
    for name in sim.nodes:
        assert (await recorded(sim, name))["argv"] == [name, str(sim.host(name).dir.path)]

    assert sim.kill(crashing) == pids[crashing]
    await wait_daemon(sim, crashing, not_pid=pids[crashing])

    sim.host(rebooting).dir.reboot_requested.write_text("{}")

    async def rebooted() -> bool:
        return bool(sim.reboots(rebooting))

    await wait_until(rebooted, what="reboot", within=10)
    restarted = await wait_daemon(sim, rebooting, not_pid=pids[rebooting])
    assert not procs.alive(pids[rebooting])

    await sim.stop_kured()
    assert sim.daemon_pid(crashing) is None and sim.daemon_pid(rebooting) is None
    assert not procs.alive(restarted)


def write_manifests(directory: Path) -> Path:
    """A minimal kured-like deployment: ServiceAccount, read-only ClusterRole, DaemonSet."""
    labels = {"name": "kured"}
    objects = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "kured", "namespace": "kube-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "kured"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kured"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "kured",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "kured", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "kured", "namespace": "kube-system"},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "kured",
                        "hostPID": True,
                        "containers": [
                            {
                                "name": "kured",
                                "image": "ghcr.io/kubereboot/kured:1.17.1",
                                "securityContext": {"privileged": True},
                            }
                        ],
                    },
                },
            },
        },
    ]
    directory.mkdir()
    (directory / "kured.yaml").write_text(yaml.safe_dump_all(objects))
    return directory


async def test_run_kured_applies_the_manifests_and_runs_as_their_serviceaccount(
    fleet: FleetFactory, kube: AsyncClient, tmp_path: Path
) -> None:
    sim = await fleet(nodes=2)
    namespace = sim.kured_namespace
    manifests = write_manifests(tmp_path / "deploy")
    command = [sys.executable, "-c", RECORDER]
    await sim.run_kured(command, raw=True, manifests=[manifests], as_serviceaccount=True)

    ds = await kube.get(DaemonSet, "kured", namespace=namespace)
    assert ds.spec is not None
    pod_spec = ds.spec.template.spec
    assert pod_spec is not None and pod_spec.nodeSelector == {FLEET_LABEL: sim.name}
    assert [t.operator for t in pod_spec.tolerations or []] == ["Exists"]
    await kube.get(ClusterRole, f"kured-{namespace}")
    binding = await kube.get(ClusterRoleBinding, f"kured-{namespace}")
    assert binding.roleRef.name == f"kured-{namespace}"
    assert [s.namespace for s in binding.subjects or []] == [namespace]

    async def ds_ready() -> bool:
        current = await kube.get(DaemonSet, "kured", namespace=namespace)
        return current.status is not None and current.status.numberReady == 2

    await wait_until(ds_ready, what="the DaemonSet's pods Ready on the fleet", within=30)

    kubeconfig = sim.state.sa_kubeconfig(namespace)
    for name in sim.nodes:
        record = await recorded(sim, name)
        assert record["kubeconfig"] == str(kubeconfig)
    async with AsyncClient(KubeConfig.from_file(kubeconfig), trust_env=False) as as_kured:
        assert len([n async for n in as_kured.list(Node)]) >= 2
        with pytest.raises(ApiError) as forbidden:
            await as_kured.patch(Node, sim.nodes[0], {"spec": {"unschedulable": True}})
        assert forbidden.value.status.code == 403


# --- the CLI and bad input -----------------------------------------------------------------


def sandbox(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kured_testbed", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kured-sandbox: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["trigger"],
        ["kill", "x-1"],
        ["workload"],
        ["stop-kured"],
        ["run-kured", "--raw", "--", "true"],
    ],
)
def test_commands_on_an_unknown_state_dir_fail_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    result = sandbox(command[0], "--state-dir", str(tmp_path / "nowhere"), *command[1:])
    assert result.returncode == 2
    assert "no sandbox in" in one_error_line(result)


def test_down_is_idempotent_where_nothing_runs(tmp_path: Path) -> None:
    assert sandbox("down", "--state-dir", str(tmp_path / "nowhere")).returncode == 0
    assert sandbox("down", "--state-dir", str(tmp_path)).returncode == 0


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    result = sandbox("up", "--state-dir", str(tmp_path), "--nodes", "0")
    assert result.returncode == 2
    assert "--nodes" in one_error_line(result)


def test_up_refuses_a_sandbox_that_is_running(control_plane: ControlPlane) -> None:
    result = sandbox("up", "--state-dir", str(control_plane.state.root))
    assert result.returncode == 1
    assert "already running" in one_error_line(result)
    assert ControlPlane.attach(control_plane.state.root).server == control_plane.server


def test_up_on_a_taken_port_fails_cleanly(control_plane: ControlPlane, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = sandbox("up", "--state-dir", str(tmp_path), "--apiserver-port", str(port))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in one_error_line(result)
    assert not list((tmp_path / "pids").glob("*.pid"))


def test_up_without_etcd_names_the_package_to_install(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    # control_plane: the binaries are built by now, so only etcd is missing from this PATH.
    result = sandbox("up", "--state-dir", str(tmp_path), env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 1
    assert "etcd not found (install the Debian package etcd-server)" in one_error_line(result)


def stale_state(root: Path) -> None:
    """What a crashed run leaves: records of processes that are gone."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    (root / "pids").mkdir(parents=True)
    (root / "pids" / "kube-apiserver.pid").write_text(f"{dead.pid}\n")
    (root / "sandbox.json").write_text('{"server": "https://127.0.0.1:1"}')
    (root / "nodes" / "old-1").mkdir(parents=True)


def test_the_cli_from_a_stale_state_dir_to_down(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    root = tmp_path / "state"
    stale_state(root)
    assert sandbox("status", "--state-dir", str(root)).returncode == 1

    up = sandbox("up", "--state-dir", str(root), "--nodes", "2", "--reboot-seconds", "0.5")
    started: list[int] = []
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == str(root / "kubeconfig")
        assert "cleaning stale sandbox state" in up.stderr
        assert not (root / "nodes" / "old-1").exists()
        started = [int(p.read_text()) for p in (root / "pids").glob("*.pid")]
        assert len(started) == 5  # etcd, apiserver, controller-manager, scheduler, supervisor

        run = sandbox(
            "run-kured", "--state-dir", str(root), "--no-manifests", "--raw", "--", "sleep", "3600"
        )
        assert run.returncode == 0, run.stderr
        assert sandbox("trigger", "--state-dir", str(root), "sbx-2").returncode == 0
        status = json.loads(sandbox("status", "--state-dir", str(root), "--json").stdout)
        rows = {row["name"]: row for row in status["nodes"]}
        assert sorted(rows) == ["sbx-1", "sbx-2"]
        assert all(row["ready"] and row["daemon_pid"] for row in rows.values())
        assert rows["sbx-2"]["sentinel"] and not rows["sbx-1"]["sentinel"]
        assert set(status["control_plane"]) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        }
        started += [row["daemon_pid"] for row in rows.values()]

        kill = sandbox("kill", "--state-dir", str(root), "sbx-1", "--signal", "TERM")
        assert kill.returncode == 0, kill.stderr
        assert sandbox("workload", "--state-dir", str(root)).stdout.strip() == "sbx-workload"
        assert sandbox("stop-kured", "--state-dir", str(root)).returncode == 0
    finally:
        down = sandbox("down", "--state-dir", str(root))
    assert down.returncode == 0, down.stderr
    assert not [pid for pid in started if procs.alive(pid)]
    assert sandbox("down", "--state-dir", str(root)).returncode == 0
