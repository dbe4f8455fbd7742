"""`make demo`'s roll, small and fast, on the session's control plane: every node is timed,
one node at a time, and the fleet is gone afterwards."""

from __future__ import annotations

import io

import pytest

from kured_testbed import procs
from kured_testbed.controlplane import ControlPlane
from kured_testbed.demo import DemoSettings, run_roll
from kured_testbed.fleet import supervisor_pid_file

pytestmark = pytest.mark.e2e

SMALL = DemoSettings(
    nodes=3,
    fleet="demo-e2e",
    kured_namespace="demo-e2e-kured",
    period="2s",
    reboot_seconds=1.0,
    within=45.0,
)


async def test_the_demo_rolls_every_node_one_at_a_time(control_plane: ControlPlane) -> None:
    out = io.StringIO()
    roll = await run_roll(control_plane, SMALL, out)
    table = out.getvalue().splitlines()
    rows = {line.split()[0]: line.split()[2:] for line in table if line.startswith("demo-e2e-")}
    assert sorted(rows) == roll.nodes
    for times in rows.values():
        assert len(times) == 4
        assert all(float(seconds) > 0 for seconds in times)
    assert roll.most_cordoned == 1
    assert roll.reboots == len(roll.nodes)
    assert "most nodes cordoned at once: 1 (concurrency 1)" in table[-1]
    state = control_plane.state
    pid_files = [supervisor_pid_file(state, SMALL.fleet)]
    for name in roll.nodes:
        pid_files += [state.node(name).kured_pid, state.node(name).init_pid]
    assert [path for path in pid_files if procs.running_pid(path) is not None] == []
