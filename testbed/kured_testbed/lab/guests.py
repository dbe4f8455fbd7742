"""QEMU guests: one process per node, under STATE/guests/<name>/, everything issue 15's faults
need kept reachable there: the QMP socket (system_reset), QEMU's pid file (SIGKILL), the
guest agent's socket (exec) and the serial console log (kept across boots).

Each guest boots the cached base disk (the images already in its containerd store) through
its own qcow2 overlay, with its config disk (a tar, see guestconfig) read-only, on QEMU's
user-mode network (slirp: no host interface, no bridge; see guest/etc/systemd/network for
why nothing off-machine is reachable).
"""

from __future__ import annotations

import logging
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kured_testbed import procs
from kured_testbed.controlplane import require_tool
from kured_testbed.lab.rootfs import GuestDisk
from kured_testbed.state import SandboxError

log = logging.getLogger("kured_testbed")

Accel = Literal["tcg", "kvm"]
MEMORY_MIB = 1024


@dataclass(frozen=True)
class GuestDir:
    """STATE/guests/<name>/: one guest's files."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def overlay(self) -> Path:
        return self.path / "root.qcow2"

    @property
    def config_disk(self) -> Path:
        return self.path / "config.tar"

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.path / "qemu.log"

    @property
    def qmp_socket(self) -> Path:
        return self.path / "qmp.sock"

    @property
    def agent_socket(self) -> Path:
        return self.path / "qga.sock"

    @property
    def pid_file(self) -> Path:
        return self.path / "qemu.pid"

    def pid(self) -> int | None:
        return procs.running_pid(self.pid_file)


def guests_root(state_root: Path) -> Path:
    return state_root / "guests"


def guest_dirs(state_root: Path) -> list[GuestDir]:
    root = guests_root(state_root)
    return [GuestDir(path) for path in sorted(root.iterdir())] if root.is_dir() else []


def kernel_cmdline(name: str) -> str:
    return " ".join(
        [
            "console=ttyS0",
            "root=/dev/vda",
            "rw",
            f"systemd.hostname={name}",
            # kubelet 1.20 and containerd 1.6 as Debian configures them want cgroup v1.
            "systemd.unified_cgroup_hierarchy=0",
            "net.ifnames=0",
            # No side channels to guard against in a throwaway guest; TCG runs faster.
            "mitigations=off",
            "panic=10",
        ]
    )


def qemu_argv(guest: GuestDir, disk: GuestDisk, accel: Accel) -> list[str]:
    qemu = require_tool("qemu-system-x86_64", "qemu-system-x86")
    # TCG's translation cache defaults to 1 GiB of host memory per guest; 192 MiB is plenty.
    accel_args = ["-accel", "tcg,thread=multi,tb-size=192", "-cpu", "max"]
    if accel == "kvm":
        accel_args = ["-accel", "kvm", "-cpu", "host"]
    drives = [
        f"file={guest.overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
        f"file={guest.config_disk},if=virtio,format=raw,readonly=on",
    ]
    return [
        qemu,
        *("-name", guest.name, "-uuid", str(uuid.uuid5(uuid.NAMESPACE_DNS, guest.name))),
        *accel_args,
        *("-m", str(MEMORY_MIB), "-smp", "1"),
        *("-nodefaults", "-no-user-config", "-display", "none"),
        *("-kernel", str(disk.kernel), "-initrd", str(disk.initrd)),
        *("-append", kernel_cmdline(guest.name)),
        *("-chardev", f"file,id=console,path={guest.console_log},append=on"),
        *("-serial", "chardev:console"),
        *(arg for drive in drives for arg in ("-drive", drive)),
        *("-netdev", "user,id=net0,ipv6=off", "-device", "virtio-net-pci,netdev=net0"),
        *("-device", "virtio-rng-pci"),
        *("-qmp", f"unix:{guest.qmp_socket},server=on,wait=off"),
        *("-chardev", f"socket,id=agent,path={guest.agent_socket},server=on,wait=off"),
        *("-device", "virtio-serial-pci"),
        *("-device", "virtserialport,chardev=agent,name=org.qemu.guest_agent.0"),
    ]


def create_overlay(guest: GuestDir, disk: GuestDisk) -> None:
    """A fresh copy-on-write disk over the cached base image (the base is never written)."""
    qemu_img = require_tool("qemu-img", "qemu-utils")
    guest.path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            *(qemu_img, "create", "-q", "-f", "qcow2", "-F", "raw"),
            *("-b", str(disk.image), str(guest.overlay)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SandboxError(f"qemu-img create failed: {result.stderr.strip()[:300]}")


def start(guest: GuestDir, disk: GuestDisk, accel: Accel) -> int:
    """Power the guest on (its config disk and overlay must exist); returns QEMU's pid."""
    argv = qemu_argv(guest, disk, accel)
    proc = procs.spawn(argv, log=guest.qemu_log, pid_file=guest.pid_file)
    log.info("guest %s started (pid %d; console: %s)", guest.name, proc.pid, guest.console_log)
    return proc.pid


def stop_all(state_root: Path) -> None:
    """Power off every guest of this state dir (SIGTERM: QEMU quits at once), by pid."""
    procs.stop_pid_files([guest.pid_file for guest in guest_dirs(state_root)])
