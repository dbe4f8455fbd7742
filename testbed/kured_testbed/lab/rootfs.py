"""The guest's disk: a Debian bookworm rootfs made by mmdebstrap, the lab's units and the
kubelet/kube-proxy binaries added, turned into an ext4 image by `mke2fs -d` (no mount, no
loop device); the kernel and initrd are taken out of it to boot with -kernel/-initrd.

Two cached levels, each keyed by its inputs: the rootfs (package list and hooks: the slow
step, about 90 s of downloads and dpkg) and the disk (rootfs + guest/ files + binaries).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from kured_testbed.controlplane import require_tool
from kured_testbed.lab import cache
from kured_testbed.lab.buildah import run_step
from kured_testbed.state import SandboxError

log = logging.getLogger("kured_testbed")

SUITE = "bookworm"
PACKAGES = (
    "systemd-sysv",
    "udev",
    "kmod",
    "iproute2",
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "e2fsprogs",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
    "ethtool",
    "socat",
    "util-linux",
    "procps",
    "qemu-guest-agent",
)
# Units that only cost CPU in a guest that lives for minutes.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    # Modules and mounts nothing in the lab uses; each modprobe took 6-10 s of a booting
    # guest's vCPU (`systemd-analyze blame`, three guests booting at once).
    "modprobe@configfs.service",
    "modprobe@dm_mod.service",
    "modprobe@drm.service",
    "modprobe@efi_pstore.service",
    "modprobe@fuse.service",
    "modprobe@loop.service",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "systemd-pstore.service",
)
ENABLED_UNITS = (
    "systemd-networkd.service",
    "kured-lab-config.service",
    "kured-lab-masquerade.service",
    "containerd.service",
    "kubelet.service",
    "kube-proxy.service",
)
GUEST_FILES = Path(__file__).with_name("guest")
PRELOAD = Path(__file__).with_name("preload-images.sh")
_MMDEBSTRAP_OPTIONS = (
    "--variant=minbase",
    "--mode=root",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    # The guest's identity is made at its first boot, not shared by every guest.
    '--customize-hook=rm -f "$1/etc/machine-id" "$1/var/lib/dbus/machine-id"',
    '--customize-hook=touch "$1/etc/machine-id"',
)


@dataclass(frozen=True)
class GuestDisk:
    """A built guest: the base disk (raw ext4, never written) and what boots it."""

    image: Path
    kernel: Path
    initrd: Path


def ensure_rootfs(log_dir: Path) -> Path:
    """The cached rootfs directory, made by mmdebstrap on first use."""
    key = cache.digest([SUITE, *PACKAGES, *_MMDEBSTRAP_OPTIONS])
    target = cache.cache_root() / f"rootfs-{key}"
    if cache.is_done(target):
        return target / "root"
    mmdebstrap = require_tool("mmdebstrap", "mmdebstrap")
    log.info("building the guest rootfs with mmdebstrap (about 2 minutes; log: %s)", log_dir)
    root = cache.fresh_dir(target) / "root"
    run_step(
        "guest-mmdebstrap",
        [
            mmdebstrap,
            *_MMDEBSTRAP_OPTIONS,
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(root),
        ],
        log_dir,
    )
    cache.mark_done(target)
    return root


def ensure_disk(binaries: Path, images: list[Path], log_dir: Path) -> GuestDisk:
    """The cached guest disk for these Kubernetes binaries and images (built in seconds from
    the rootfs): the images are in the guest's containerd store already, so no guest imports
    anything when it boots."""
    rootfs = ensure_rootfs(log_dir)
    key = cache.digest(
        [
            *(
                f"{image.name}:{image.stat().st_size}:{image.stat().st_mtime_ns}"
                for image in images
            ),
            str(rootfs),
            *cache.tree_parts(GUEST_FILES),
            *_binary_identity(binaries),
            "ext4 4G",
            *ENABLED_UNITS,
            *MASKED_UNITS,
        ]
    )
    target = cache.cache_root() / f"disk-{key}"
    disk = GuestDisk(target / "root.img", target / "vmlinuz", target / "initrd.img")
    if cache.is_done(target):
        cache.mark_used(target)
        return disk
    log.info("making the guest disk (log: %s)", log_dir)
    cache.fresh_dir(target)
    staging = target / "staging"
    run_step("guest-copy", ["cp", "-a", str(rootfs), str(staging)], log_dir)
    _add_lab_files(staging, binaries, log_dir)
    run_step("guest-images", ["bash", str(PRELOAD), str(staging), *map(str, images)], log_dir)
    _take_boot_files(staging, disk)
    mke2fs = require_tool("mke2fs", "e2fsprogs")
    run_step(
        "guest-mke2fs",
        [mke2fs, "-q", "-t", "ext4", "-L", "kured-lab", "-d", str(staging), str(disk.image), "4G"],
        log_dir,
    )
    shutil.rmtree(staging)
    cache.mark_done(target)
    for old in cache.prune(target):
        log.info("removed an older guest disk: %s", old)
    return disk


def _binary_identity(binaries: Path) -> list[str]:
    return [
        f"{name}:{(binaries / name).stat().st_size}:{(binaries / name).stat().st_mtime_ns}"
        for name in ("kubelet", "kube-proxy")
    ]


def _add_lab_files(staging: Path, binaries: Path, log_dir: Path) -> None:
    """guest/ over the rootfs, the two binaries, the CNI config link, units enabled/masked."""
    shutil.copytree(GUEST_FILES, staging, dirs_exist_ok=True, symlinks=True)
    for name in ("kubelet", "kube-proxy"):
        shutil.copy2(binaries / name, staging / "usr/local/bin" / name)
    cni = staging / "etc/cni/net.d"
    cni.mkdir(parents=True, exist_ok=True)
    (cni / "10-kured-lab.conflist").symlink_to("/run/kured-lab/cni.conflist")
    systemctl = require_tool("systemctl", "systemd")
    root = f"--root={staging}"
    run_step("guest-enable", [systemctl, root, "enable", *ENABLED_UNITS], log_dir)
    run_step("guest-mask", [systemctl, root, "mask", *MASKED_UNITS], log_dir)


def _take_boot_files(staging: Path, disk: GuestDisk) -> None:
    """The newest kernel and its initrd out of /boot (Debian's cloud kernel has virtio and
    ext4 in its initramfs)."""
    kernels = sorted((staging / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise SandboxError(f"no kernel in the guest rootfs ({staging / 'boot'})")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    shutil.copy2(kernels[-1], disk.kernel)
    shutil.copy2(staging / "boot" / f"initrd.img-{version}", disk.initrd)
    os.chmod(disk.kernel, 0o644)
