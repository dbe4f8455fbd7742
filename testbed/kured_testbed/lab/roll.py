"""A real roll on the lab: the sentinel created in every guest, kured left to it, and what the
cluster showed measured from outside by the sandbox's roll watcher (rollwatch.Roll, the
table of `make demo`), plus what only a real node can show: the guest's own boot id from
/proc/sys/kernel/random/boot_id before and after, and the sentinel gone (/run is tmpfs).

Checked at the end (RollFailed otherwise): never more than one node unavailable (cordoned or
NotReady) at once, every guest's and every Node's boot id changed, no sentinel left, every
node Ready and uncordoned, and the lock free.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from lightkube import AsyncClient

from kured_testbed.demo import Following, RollFailed, live_view, say, summary
from kured_testbed.lab import agent
from kured_testbed.lab.cluster import lab_fleet
from kured_testbed.lab.guests import GuestDir, guest_dirs
from kured_testbed.rollwatch import Roll, following

SENTINEL = "/var/run/reboot-required"
KURED_NAMESPACE = "kube-system"
AGENT_RETRY_SECONDS = 2.0


@dataclass
class LabRoll:
    """One roll's outcome: the watcher's record and the guests' own boot ids."""

    roll: Roll
    boot_before: dict[str, str] = field(default_factory=dict)
    boot_after: dict[str, str] = field(default_factory=dict)
    most_unavailable: int = 0

    def see(self) -> None:
        """Count nodes out of service now (cordoned or NotReady), keeping the maximum."""
        out = [v for v in self.roll.views.values() if v.unschedulable or not v.ready]
        self.most_unavailable = max(self.most_unavailable, len(out))

    def lines(self) -> list[str]:
        rows = [f"{'NODE':<10} {'BOOT ID BEFORE':<38} BOOT ID AFTER"]
        rows += [
            f"{name:<10} {self.boot_before.get(name, '-'):<38} {self.boot_after.get(name, '-')}"
            for name in self.roll.nodes
        ]
        return [
            *summary(self.roll),
            *rows,
            f"most nodes unavailable at once: {self.most_unavailable}",
        ]


async def boot_id_when_up(guest: GuestDir, within: float) -> str:
    """The guest's boot id once its agent answers again (it is down while it reboots)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await agent.boot_id(guest)
        except agent.AgentUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(AGENT_RETRY_SECONDS)


async def roll(client: AsyncClient, state_dir: Path, out: TextIO, within: float) -> LabRoll:
    """Create the sentinel in every guest, follow kured's roll to the end and check it."""
    members = guest_dirs(state_dir)
    result = LabRoll(Roll(lab_fleet(len(members))))
    changed = asyncio.Event()
    async with following(client, result.roll, KURED_NAMESPACE, changed) as check:
        watch = Following(result.roll, live_view(out), changed, check, within)
        await watch.until(lambda: result.roll.synced)
        for guest in members:
            result.boot_before[guest.name] = await agent.boot_id(guest)
            await agent.output(guest, ["touch", SENTINEL])
        say(out, f"{SENTINEL} created in every guest; kured rolls them one at a time")
        result.roll.begin(time.monotonic())

        def finished() -> bool:
            result.see()
            return result.roll.finished

        await watch.until(finished)
    for guest in members:
        result.boot_after[guest.name] = await boot_id_when_up(guest, within)
        left = await agent.run(guest, ["test", "-e", SENTINEL])
        if left.exit_code == 0:
            raise RollFailed(f"{SENTINEL} is still there in {guest.name} after its reboot")
    _check(result)
    return result


def _check(result: LabRoll) -> None:
    if result.most_unavailable > 1:
        raise RollFailed(f"{result.most_unavailable} nodes were unavailable at once")
    same = [name for name, boot in result.boot_after.items() if boot == result.boot_before[name]]
    if same:
        raise RollFailed(f"the guest boot id did not change on {', '.join(same)}")
    unrebooted = [n for n, line in result.roll.timelines.items() if line.reboots < 1]
    if unrebooted:
        raise RollFailed(f"the Node bootID did not change on {', '.join(unrebooted)}")
