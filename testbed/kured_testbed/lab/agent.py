"""Commands in a guest through the QEMU guest agent (qemu-guest-agent in the guest, its
virtio-serial port on the host as STATE/guests/<name>/qga.sock), spoken with qemu.qmp's
client: no ssh daemon, keys or port forwards in the lab.

    result = await run(guest, ["cat", "/proc/sys/kernel/random/boot_id"])
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from dataclasses import dataclass
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from kured_testbed.lab.guests import GuestDir
from kured_testbed.state import SandboxError

_POLL_SECONDS = 0.5  # each poll is a log line of qemu-ga in the guest journal
_CONNECT_SECONDS = 10.0


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: bytes
    stderr: bytes


class AgentUnavailable(SandboxError):
    """The guest agent does not answer (the guest is booting, rebooting or off)."""


async def _connect(guest: GuestDir) -> QMPClient:
    """A client on the agent's socket, synchronised (guest-sync drops any stale reply a
    previous client left in the channel)."""
    client = QMPClient(guest.name)
    client.await_greeting = False
    client.negotiate = False
    try:
        async with asyncio.timeout(_CONNECT_SECONDS):
            await client.connect(str(guest.agent_socket))
            token = random.randrange(1, 2**31)
            echoed = await client.execute("guest-sync", {"id": token})
        if echoed != token:
            raise AgentUnavailable(f"the guest agent of {guest.name} is out of step")
    except (QMPError, OSError, TimeoutError) as error:
        await client.disconnect()
        raise AgentUnavailable(f"the guest agent of {guest.name} does not answer") from error
    return client


async def run(guest: GuestDir, argv: list[str], within: float = 300.0) -> Result:
    """Run argv as root in the guest; its exit code and output."""
    client = await _connect(guest)
    try:
        started = await client.execute(
            "guest-exec", {"path": argv[0], "arg": argv[1:], "capture-output": True}
        )
        pid = _field(started, "pid")
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            status = await client.execute("guest-exec-status", {"pid": pid})
            if isinstance(status, dict) and status.get("exited"):
                return Result(
                    int(status.get("exitcode", status.get("signal", 128) + 128)),
                    base64.b64decode(status.get("out-data", "")),
                    base64.b64decode(status.get("err-data", "")),
                )
            await asyncio.sleep(_POLL_SECONDS)
        raise SandboxError(f"{' '.join(argv)} in {guest.name} did not finish in {within:g} s")
    except QMPError as error:
        raise AgentUnavailable(f"the guest agent of {guest.name} went away: {error}") from error
    finally:
        await client.disconnect()


def _field(reply: object, name: str) -> Any:
    if not isinstance(reply, dict) or name not in reply:
        raise SandboxError(f"unexpected guest agent reply: {reply!r}"[:300])
    return reply[name]


async def output(guest: GuestDir, argv: list[str]) -> str:
    """The stdout of a command that must succeed."""
    result = await run(guest, argv)
    if result.exit_code != 0:
        error = result.stderr.decode(errors="replace").strip()[:300]
        raise SandboxError(f"{' '.join(argv)} in {guest.name} exited {result.exit_code}: {error}")
    return result.stdout.decode(errors="replace")


async def boot_id(guest: GuestDir) -> str:
    return (await output(guest, ["cat", "/proc/sys/kernel/random/boot_id"])).strip()
