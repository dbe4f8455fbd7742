"""Fixtures over the sandbox's Python API, so e2e tests read like the `kured-sandbox` CLI.

- control_plane (session): a real control plane in a temporary state dir, stopped at the end
  of the session whatever happens (built first on a machine without cached binaries).
- kube: an admin lightkube AsyncClient.
- fleet: a factory, `await fleet(nodes=3, reboot_seconds=1.0, zones=3)` → a started
  kured_testbed.api.Fleet with fresh node names; stopped and its nodes deleted after the test.
- audit: `audit()` → the audit log's events so far.
- lock_backend: the `--lock-backend=…` flag; a test that takes it runs once per lock backend
  (the issue's "the same e2e suite passes on both backends").
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from lightkube import AsyncClient

from kured_testbed.api import Fleet, FleetFactory, audit_events
from kured_testbed.controlplane import ControlPlane
from kured_testbed.fleet import FleetConfig

_fleet_numbers = itertools.count(1)
LOCK_BACKENDS = ("daemonset-annotation", "lease")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane.start(tmp_path_factory.mktemp("sandbox"))
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[AsyncClient]:
    async with control_plane.client() as client:
        yield client


def fleet_name(test_name: str) -> str:
    """A fleet name unique in the session that says which test made it: f3-nodes-go-ready."""
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower().removeprefix("test_")).strip("-")
    return f"f{next(_fleet_numbers)}-{slug[:18]}".rstrip("-")


@pytest.fixture
async def fleet(
    control_plane: ControlPlane, kube: AsyncClient, request: pytest.FixtureRequest
) -> AsyncIterator[FleetFactory]:
    started: list[Fleet] = []

    async def start(
        nodes: int = 3,
        *,
        reboot_seconds: float = 1.0,
        zones: int = 3,
        pod_start_seconds: float = 0.2,
    ) -> Fleet:
        name = fleet_name(request.node.name)
        config = FleetConfig(name, nodes, zones, reboot_seconds, pod_start_seconds)
        started.append(
            await Fleet.start(control_plane, kube, config, kured_namespace=f"{name}-kured")
        )
        return started[-1]

    try:
        yield start
    finally:
        for each in started:
            await each.stop()


@pytest.fixture
def audit(control_plane: ControlPlane) -> Callable[[], list[dict[str, Any]]]:
    return lambda: list(audit_events(control_plane.state))


@pytest.fixture(params=LOCK_BACKENDS)
def lock_backend(request: pytest.FixtureRequest) -> str:
    """``--lock-backend=<name>`` for each backend in turn (test ids end in the name)."""
    return f"--lock-backend={request.param}"
