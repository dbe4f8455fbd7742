"""The simulated host of one node, as files in STATE/nodes/<node>/ (the contract with kured's
SimulatedHost in docs/architecture.md): the sentinel, the boot id, the reboot request and the
stand-in for PID 1 that the signal reboot method kills.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from typing import Any

from kured_testbed import procs
from kured_testbed.state import NodeDir, atomic_write

# What Ubuntu's update-notifier writes next to /var/run/reboot-required.
PENDING_PACKAGES = "linux-image-sandbox\n"


class SimulatedHost:
    """One node's host files; the supervisor owns the PID 1 stand-in."""

    def __init__(self, node_dir: NodeDir) -> None:
        self.dir = node_dir

    def boot_id(self) -> str:
        """The current boot id, booting for the first time if the node never has."""
        with contextlib.suppress(FileNotFoundError):
            if current := self.dir.boot_id.read_text().strip():
                return current
        return self.boot()

    def boot(self) -> str:
        """A fresh boot: a new boot id, and the package manager's reboot request satisfied."""
        boot_id = str(uuid.uuid4())
        atomic_write(self.dir.boot_id, boot_id + "\n")
        self.dir.sentinel.unlink(missing_ok=True)
        self.dir.sentinel_pkgs.unlink(missing_ok=True)
        return boot_id

    def require_reboot(self) -> None:
        """What a package upgrade does: create the sentinel (and the package list)."""
        atomic_write(self.dir.sentinel_pkgs, PENDING_PACKAGES)
        atomic_write(self.dir.sentinel, "*** System restart required ***\n")

    def reboot_required(self) -> bool:
        return self.dir.sentinel.exists()

    def take_reboot_request(self) -> dict[str, Any] | None:
        """The daemon's reboot request (command method), consumed; None when there is none."""
        try:
            text = self.dir.reboot_requested.read_text()
        except FileNotFoundError:
            return None
        self.dir.reboot_requested.unlink(missing_ok=True)
        try:
            request = json.loads(text)
        except json.JSONDecodeError:
            request = {"raw": text}
        return request if isinstance(request, dict) else {"raw": request}

    def start_init(self) -> subprocess.Popen[bytes]:
        """A cheap stand-in for PID 1, in its own process group: a signal that would stop the
        real init (kured's signal method) kills it, and the supervisor then reboots the node."""
        proc = subprocess.Popen(
            ["sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.write_pid(self.dir.init_pid, proc.pid)
        return proc

    def record_reboot(self, old_boot_id: str, new_boot_id: str, reason: str, down: float) -> None:
        """Keep a history of simulated reboots for tests, benchmarks and the chaos checker:
        `down` is when the node went down, `time` when it came back."""
        line = json.dumps(
            {
                "time": time.time(),
                "down": down,
                "from": old_boot_id,
                "to": new_boot_id,
                "reason": reason,
            }
        )
        with self.dir.reboots.open("a") as out:
            out.write(line + "\n")
