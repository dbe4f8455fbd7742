"""Real rolls on the lab's QEMU guests (issue 14): one lab of two guests brought up once, kured
installed from deploy/manifests as shipped, rolled with --reboot-method=command, then switched
to the -signal manifest and rolled again. Each roll is measured on the API by the watcher
(kured_testbed.lab.roll), never by kured's logs.

TCG needs no /dev/kvm, so this runs on every machine; the first run builds the guest disk and
the images (cached under ~/.cache/kured-lab).
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube.resources.apps_v1 import DaemonSet

from kured_testbed.controlplane import ControlPlane
from kured_testbed.lab import agent, roll, up
from kured_testbed.lab.guests import guest_dirs

# A roll of 2 TCG guests takes about 6 min on a quiet 2-core machine, 15-45 min on one loaded
# by other builds (docs/lab.md); the deadline keeps a hung roll inside CI's own time limit.
ROLL_SECONDS = 1800.0
pytestmark = [pytest.mark.lab, pytest.mark.timeout(ROLL_SECONDS + 900)]

NODES = 2


@pytest.fixture(scope="module")
def lab() -> Iterator[Path]:
    # Not under pytest's basetemp: another pytest run on the machine prunes old basetemps,
    # and this lab lives for an hour or more.
    state_dir = Path(tempfile.mkdtemp(prefix="kured-lab-test-")).resolve()
    try:
        asyncio.run(up.up(state_dir, up.LabSettings(NODES, "command")))
        yield state_dir
    finally:
        up.down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


async def _roll(state_dir: Path) -> roll.LabRoll:
    plane = ControlPlane.attach(state_dir)
    async with plane.client() as client:
        return await roll.roll(client, state_dir, io.StringIO(), ROLL_SECONDS)


def _assert_real_roll(result: roll.LabRoll) -> None:
    """What roll.roll checked, restated as the test's own claims."""
    assert result.most_unavailable == 1
    assert result.roll.most_cordoned == 1
    assert result.roll.finished and not result.roll.holders
    for name in result.roll.nodes:
        assert result.boot_after[name] != result.boot_before[name]
        assert result.roll.timelines[name].reboots >= 1
        assert result.roll.timelines[name].done


async def _reboot_args(state_dir: Path) -> list[str]:
    plane = ControlPlane.attach(state_dir)
    async with plane.client() as client:
        ds = await client.get(DaemonSet, "kured", namespace="kube-system")
    assert ds.spec is not None and ds.spec.template.spec is not None
    args = ds.spec.template.spec.containers[0].args or []
    return [arg for arg in args if arg.startswith(("--reboot-method", "--reboot-command"))]


async def test_command_roll(lab: Path) -> None:
    assert "--reboot-command=/bin/systemctl reboot" in await _reboot_args(lab)
    _assert_real_roll(await _roll(lab))


async def test_signal_roll(lab: Path) -> None:
    plane = ControlPlane.attach(lab)
    async with plane.client() as client:
        await up.install_kured(plane, client, up.LabSettings(NODES, "signal"))
    assert "--reboot-method=signal" in await _reboot_args(lab)
    _assert_real_roll(await _roll(lab))
    for guest in guest_dirs(lab):  # the signal rebooted the guest, systemd came back as PID 1
        assert (await agent.output(guest, ["cat", "/proc/1/comm"])).strip() == "systemd"
