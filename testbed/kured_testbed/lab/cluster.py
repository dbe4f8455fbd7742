"""`kured-lab up`'s cluster: the sandbox control plane with what real kubelets need, and N
QEMU guests joined to it as Nodes.

The control plane is the sandbox's (controlplane.ControlPlane) with Node,RBAC authorization
and a token user per kubelet (system:node:<name> in system:nodes, what the Node authorizer
expects) and one for kube-proxy (system:kube-proxy, bound to system:node-proxier by the
bootstrap RBAC). The sandbox runs without an endpoint reconciler, so the lab points the
`kubernetes` Service at 10.0.2.2:<port>, where pods in a guest reach the host's API server:
in-cluster config (KUBERNETES_SERVICE_HOST=10.0.0.1) then goes through kube-proxy as on any
cluster, and the API server's self-signed certificate names 10.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import yaml
from lightkube import AsyncClient, codecs
from lightkube.resources.core_v1 import Node

from kured_testbed.controlplane import ControlPlane, Options
from kured_testbed.fleet import FleetConfig
from kured_testbed.lab import guestconfig, guests
from kured_testbed.lab.guests import Accel, GuestDir
from kured_testbed.lab.images import PAUSE_IMAGE
from kured_testbed.lab.rootfs import GuestDisk
from kured_testbed.state import FLEET_LABEL, SandboxError

log = logging.getLogger("kured_testbed")

FLEET = "lab"
PROXY_USER = "kube-proxy"
# A TCG guest registers about a minute after power-on; three at once on two cores take longer.
JOIN_SECONDS = 900.0
# Under --accel kvm a kernel that KVM cannot run resets before it prints anything.
KVM_BANNER_SECONDS = 60.0


def lab_fleet(nodes: int) -> FleetConfig:
    return FleetConfig(FLEET, nodes)


def kubelet_user(node: str) -> str:
    return f"kubelet-{node}"


def control_plane_options(fleet: FleetConfig) -> Options:
    users = {
        kubelet_user(name): (f"system:node:{name}", "system:nodes") for name in fleet.node_names()
    }
    users[PROXY_USER] = ("system:kube-proxy", "")
    return Options(users=users, apiserver_flags={"authorization-mode": "Node,RBAC"})


def _token(plane: ControlPlane, user: str) -> str:
    config = yaml.safe_load(plane.state.component_kubeconfig(user).read_text())
    return str(config["users"][0]["user"]["token"])


def api_port(plane: ControlPlane) -> int:
    return int(plane.server.rsplit(":", 1)[1])


async def point_kubernetes_service(client: AsyncClient, port: int) -> None:
    """The `kubernetes` Service's Endpoints: the API server as pods in a guest reach it."""
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "subsets": [
            {
                "addresses": [{"ip": guestconfig.HOST_FROM_GUEST}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            }
        ],
    }
    await client.apply(codecs.from_dict(endpoints), force=True)


def start_guests(
    plane: ControlPlane, fleet: FleetConfig, disk: GuestDisk, accel: Accel
) -> list[GuestDir]:
    """Make each guest's overlay and config disk and power it on."""
    ca_pem = (plane.state.root / "certs" / "apiserver.crt").read_bytes()
    started = []
    for index, name in enumerate(fleet.node_names(), start=1):
        guest = GuestDir(guests.guests_root(plane.state.root) / name)
        guests.create_overlay(guest, disk)
        identity = guestconfig.NodeIdentity(
            name,
            index,
            _token(plane, kubelet_user(name)),
            _token(plane, PROXY_USER),
            f"{FLEET_LABEL}={fleet.name}",
        )
        guest.config_disk.write_bytes(
            guestconfig.config_tar(identity, api_port(plane), ca_pem, PAUSE_IMAGE)
        )
        guests.start(guest, disk, accel)
        started.append(guest)
    return started


def _ready(node: Node) -> bool:
    conditions = node.status.conditions if node.status else None
    return any(c.type == "Ready" and c.status == "True" for c in conditions or [])


def _check_guest(guest: GuestDir, accel: Accel, started: float) -> None:
    """Fail at once for a guest that is gone, or that KVM cannot boot (seen here: QEMU
    aborting on an MSR the paravirtual KVM refuses, or a kernel that resets before it
    prints its banner)."""
    exited = guest.pid() is None
    if accel == "kvm" and (exited or time.monotonic() - started > KVM_BANNER_SECONDS):
        text = guest.console_log.read_text(errors="replace") if guest.console_log.exists() else ""
        if exited or "Linux version" not in text:
            raise SandboxError(
                f"{guest.name} does not boot under --accel kvm (this host's KVM cannot run "
                f"it: {_last_line(guest.qemu_log) or 'no kernel output'}); use --accel tcg"
            )
    if exited:
        raise SandboxError(f"QEMU of {guest.name} exited (log: {guest.qemu_log})")


def _last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").split("\n") if log.exists() else []
    return next((line.strip() for line in reversed(lines) if line.strip()), "")[:200]


async def wait_joined(
    client: AsyncClient, members: list[GuestDir], accel: Accel, within: float = JOIN_SECONDS
) -> float:
    """Wait until every guest is a Ready Node; seconds it took. A guest that does not join
    in time is named with its serial console log."""
    started = time.monotonic()
    while True:
        nodes = {n.metadata.name: n async for n in client.list(Node) if n.metadata}
        waiting = [g for g in members if g.name not in nodes or not _ready(nodes[g.name])]
        if not waiting:
            return time.monotonic() - started
        for guest in waiting:
            _check_guest(guest, accel, started)
        if time.monotonic() - started > within:
            guest = waiting[0]
            raise SandboxError(
                f"{guest.name} did not join as a Ready node within {within:g} s "
                f"(serial console: {guest.console_log})"
            )
        await asyncio.sleep(2.0)
