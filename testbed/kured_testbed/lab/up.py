"""`kured-lab up` and `down`: build (or reuse) the guest disk and the images while the
control plane starts, power the guests on, wait until each is a Ready Node, put the
workload across the nodes and install kured as users deploy it.

Each phase's duration goes to STATE/lab.json (docs/lab.md quotes them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lightkube import AsyncClient
from lightkube.resources.apps_v1 import DaemonSet

from kured_testbed.controlplane import ControlPlane, ensure_binaries
from kured_testbed.controlplane import down as stop_control_plane
from kured_testbed.lab import cluster, guests, install, rootfs
from kured_testbed.lab.debian import ensure_packages
from kured_testbed.lab.guests import Accel
from kured_testbed.lab.images import PAUSE_IMAGE, ensure_images
from kured_testbed.lab.install import Method, Source
from kured_testbed.state import SandboxError, SandboxState, atomic_write, read_json
from kured_testbed.workload import deploy_workload

log = logging.getLogger("kured_testbed")

T = TypeVar("T")
# {probe: Debian package} the guests need on the host (the images add their own).
HOST_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "openssl": "openssl",
    "etcd": "etcd-server",
}
READY_SECONDS = 900.0
# The workload on real (emulated) nodes: every pod is the pause image, one per node and two
# more, with the sandbox's budgets (maxUnavailable 1, minAvailable 1).
WORKLOAD_NAMESPACE = "lab-workload"


@dataclass(frozen=True)
class LabSettings:
    nodes: int
    reboot_method: Method = "command"
    install: Source = "manifests"
    values: Path | None = None
    accel: Accel = "tcg"


@dataclass
class Phases:
    """Seconds each phase of `up` took (wall clock; some overlap, as named)."""

    seconds: dict[str, float] = field(default_factory=dict)

    async def timed(self, name: str, work: Awaitable[T]) -> T:
        started = time.monotonic()
        result = await work
        self.seconds[name] = round(time.monotonic() - started, 1)
        log.info("%s: %.1f s", name, self.seconds[name])
        return result


def lab_file(state_dir: Path) -> Path:
    return state_dir / "lab.json"


async def up(state_dir: Path, settings: LabSettings) -> Phases:
    """Bring the whole lab up in state_dir (an absolute path); on any failure stop what was
    started and raise."""
    fleet = cluster.lab_fleet(settings.nodes)
    phases = Phases()
    logs = state_dir / "logs"
    ensure_packages(HOST_PACKAGES)
    binaries = ensure_binaries(logs / "control-plane-build.log")
    start = asyncio.to_thread(
        ControlPlane.start, state_dir, options=cluster.control_plane_options(fleet)
    )
    plane, disk = await asyncio.gather(
        phases.timed("control plane", start),
        phases.timed("builds", _builds(binaries, logs / "build")),
        return_exceptions=True,
    )
    try:
        if isinstance(disk, BaseException):
            raise disk
        if isinstance(plane, BaseException):
            raise plane
        async with plane.client() as client:
            await _bring_up(plane, client, settings, phases, disk)
    except BaseException:
        down(state_dir)
        raise
    return phases


async def _bring_up(
    plane: ControlPlane,
    client: AsyncClient,
    settings: LabSettings,
    phases: Phases,
    disk: rootfs.GuestDisk,
) -> None:
    fleet = cluster.lab_fleet(settings.nodes)
    await cluster.point_kubernetes_service(client, cluster.api_port(plane))
    members = cluster.start_guests(plane, fleet, disk, settings.accel)
    _record(plane.state.root, settings, phases)
    await phases.timed("nodes Ready", cluster.wait_joined(client, members, settings.accel))
    # Both at once: on TCG nodes each pod takes minutes to start, and neither needs the other.
    workload = deploy_workload(
        client, fleet, namespace=WORKLOAD_NAMESPACE, image=PAUSE_IMAGE, within=READY_SECONDS
    )
    await asyncio.gather(
        phases.timed("workload Ready", workload),
        phases.timed("kured Ready", install_kured(plane, client, settings)),
    )
    _record(plane.state.root, settings, phases)


async def _builds(binaries: Path, log_dir: Path) -> rootfs.GuestDisk:
    """The guest disk with the images loaded (each piece cached; rootfs and images at once)."""
    _, images = await asyncio.gather(
        asyncio.to_thread(rootfs.ensure_rootfs, log_dir),
        asyncio.to_thread(ensure_images, log_dir),
    )
    return await asyncio.to_thread(rootfs.ensure_disk, binaries, images, log_dir)


async def install_kured(plane: ControlPlane, client: AsyncClient, settings: LabSettings) -> None:
    """Apply kured's objects as shipped (the lab image in place of the release one) and wait
    until its DaemonSet has an updated, Ready pod on every node; also switches a running lab
    to another reboot method (the DaemonSet rolls its pods one node at a time)."""
    objects = install.kured_objects(settings.reboot_method, settings.install, settings.values)
    await install.apply(plane.kubeconfig, objects)
    manifest = next((o for o in objects if o.get("kind") == "DaemonSet"), None)
    if manifest is None:
        raise SandboxError("the kured objects hold no DaemonSet")
    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"].get("namespace", "kube-system")

    async def rolled_out() -> bool:
        ds = await client.get(DaemonSet, name, namespace=namespace)
        status, generation = ds.status, ds.metadata.generation if ds.metadata else None
        if status is None or status.observedGeneration != generation:
            return False
        wanted = status.desiredNumberScheduled
        return wanted == settings.nodes and (
            (status.updatedNumberScheduled or 0) == wanted
            and (status.numberAvailable or 0) == wanted
            and status.numberReady == wanted
        )

    await _until(
        rolled_out, f"kured's DaemonSet {namespace}/{name} not Ready on every node in time"
    )


async def _until(check: Callable[[], Awaitable[bool]], failure: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while not await check():
        if time.monotonic() > deadline:
            raise SandboxError(failure)
        await asyncio.sleep(2.0)


def _record(state_dir: Path, settings: LabSettings, phases: Phases) -> None:
    info = {**asdict(settings), "values": str(settings.values or ""), "phases": phases.seconds}
    atomic_write(lab_file(state_dir), json.dumps(info, indent=2) + "\n")


def settings_of(state_dir: Path) -> dict[str, Any]:
    """What `up` recorded in this state dir (one-line error if it is not a lab)."""
    info = read_json(lab_file(state_dir.resolve()))
    if info is None:
        raise SandboxError(f"no lab in {state_dir} (run: kured-lab up --state-dir {state_dir})")
    return info


def down(state_dir: Path) -> None:
    """Stop every guest and the control plane of this state dir, by their pids."""
    state_dir = state_dir.resolve()
    guests.stop_all(state_dir)
    stop_control_plane(SandboxState(state_dir))
