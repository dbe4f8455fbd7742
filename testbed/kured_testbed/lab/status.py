"""`kured-lab status`: each guest's QEMU process and the Node it runs, from the API."""

from __future__ import annotations

from pathlib import Path

from lightkube.resources.core_v1 import Node

from kured_testbed.controlplane import ControlPlane
from kured_testbed.lab.guests import guest_dirs


def _row(name: str, pid: int | None, node: Node | None) -> str:
    if node is None or node.status is None:
        return f"{name:<10} qemu {pid or '-':<8} node -"
    ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    cordoned = bool(node.spec and node.spec.unschedulable)
    boot_id = node.status.nodeInfo.bootID if node.status.nodeInfo else "-"
    return (
        f"{name:<10} qemu {pid or '-':<8} {'Ready' if ready else 'NotReady':<9}"
        f"{' cordoned' if cordoned else '':<10} boot {boot_id}"
    )


async def lines(state_dir: Path) -> list[str]:
    plane = ControlPlane.attach(state_dir)
    async with plane.client() as client:
        nodes = {n.metadata.name: n async for n in client.list(Node) if n.metadata}
    rows = [f"control plane {plane.server} (kubeconfig {plane.kubeconfig})"]
    rows += [
        _row(guest.name, guest.pid(), nodes.get(guest.name)) for guest in guest_dirs(state_dir)
    ]
    return rows
