"""The lab's images loaded into a guest's containerd once, not at every `kured-lab up`: a
guest boots the base disk through a qcow2 overlay with the image disks attached and the
kernel told to reach kured-lab-bake.target, imports them (`ctr -n k8s.io images import`),
powers off, and that overlay becomes the base of every lab guest. Importing kured's image
under TCG takes minutes per guest, so this is the largest saving of a warm `up`.

Cached beside the disk, keyed by the disk and the image archives.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import replace
from pathlib import Path

from kured_testbed.lab import cache, guestconfig, guests
from kured_testbed.lab.guests import Accel, GuestDir
from kured_testbed.lab.images import PAUSE_IMAGE
from kured_testbed.lab.rootfs import GuestDisk
from kured_testbed.state import SandboxError

log = logging.getLogger("kured_testbed")

BAKE_UNIT = "kured-lab-bake.target"
DONE_LINE = "kured-lab-bake: images loaded"
BAKE_SECONDS = 1800


def ensure_baked(disk: GuestDisk, images: list[Path], accel: Accel) -> GuestDisk:
    """The base disk with the images in containerd (images[0] must be the pause image)."""
    identity = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in images]
    key = cache.digest([str(disk.image), *identity])
    target = cache.cache_root() / f"baked-{key}"
    guest = GuestDir(target / "bake")
    baked = replace(disk, image=guest.overlay, image_format="qcow2")
    if cache.is_done(target):
        return baked
    log.info("loading the images into the guest disk once (log: %s)", guest.console_log)
    cache.fresh_dir(target)
    guests.create_overlay(guest, disk)
    guest.config_disk.write_bytes(
        guestconfig.tar_of(
            {
                "env": guestconfig.env_file(
                    {"PAUSE_DEVICE": guests.image_devices(images)[0]}
                    | {"IMAGE_DEVICES": " ".join(guests.image_devices(images)[1:])}
                ),
                "containerd.toml": guestconfig.containerd_config(PAUSE_IMAGE),
            }
        )
    )
    argv = guests.qemu_argv(guest, disk, images, accel, boot_unit=BAKE_UNIT)
    with guest.qemu_log.open("ab") as out:
        try:
            subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, timeout=BAKE_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            raise SandboxError(
                f"loading the images into the guest disk took over {BAKE_SECONDS} s "
                f"(console: {guest.console_log})"
            ) from None
    if DONE_LINE not in guest.console_log.read_text(errors="replace"):
        raise SandboxError(
            f"loading the images into the guest disk failed (console: {guest.console_log})"
        )
    cache.mark_done(target)
    return baked
