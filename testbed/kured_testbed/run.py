"""`kured-sandbox run-kured` as a function: apply kured's manifests for a fleet, pick the
credentials (admin, or the DaemonSet's ServiceAccount), and have the fleet's supervisor run
one daemon per node."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from pathlib import Path

from lightkube import AsyncClient

from kured_testbed.controlplane import ControlPlane
from kured_testbed.daemons import DaemonSpec, compile_bytecode, kured_command, set_daemons
from kured_testbed.fleet import FleetConfig
from kured_testbed.manifests import (
    SYSTEM_NAMESPACE,
    apply_manifests,
    load_manifests,
    service_account_kubeconfig,
    service_account_of,
)
from kured_testbed.state import UsageError


async def run_kured(
    plane: ControlPlane,
    client: AsyncClient,
    fleet: str,
    args: list[str],
    *,
    namespace: str = SYSTEM_NAMESPACE,
    manifests: Sequence[Path] | None,
    as_serviceaccount: bool = False,
    raw: bool = False,
    env: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Start (or replace) the fleet's daemons. args are kured flags, or with raw=True the whole
    command ({node} and {node_dir} substituted). manifests=None applies none. Returns the
    cluster-scoped objects made for this namespace alone (kind, name)."""
    FleetConfig.load(plane.state, fleet)  # fails clearly for an unknown fleet
    kubeconfig = plane.kubeconfig
    own: list[tuple[str, str]] = []
    if manifests is not None:
        objects = load_manifests(manifests)
        account = service_account_of(objects)
        own = await apply_manifests(client, objects, namespace, fleet)
        if as_serviceaccount:
            kubeconfig = await service_account_kubeconfig(client, plane, namespace, account)
    elif as_serviceaccount:
        raise UsageError("--as-serviceaccount needs the manifests that grant its RBAC")
    if raw and not args:
        raise UsageError("--raw needs a command after --")
    if raw and shutil.which(args[0]) is None:
        raise UsageError(f"command not found: {args[0]}")
    if not raw:
        await asyncio.to_thread(compile_bytecode)
    command = args if raw else kured_command(kubeconfig, namespace, args)
    spec_env = {"KUBECONFIG": str(kubeconfig), **(env or {})}
    await set_daemons(plane.state, fleet, DaemonSpec(command, spec_env))
    return own


async def stop_kured(plane: ControlPlane, fleet: str) -> None:
    await set_daemons(plane.state, fleet, None)
