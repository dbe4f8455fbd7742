"""Debian packages the lab runs on the host, installed with apt-get when missing, so a fresh
machine needs nothing done by hand; one that cannot install them gets one line naming them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from kured_testbed.state import SandboxError

_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def _present(probe: str) -> bool:
    """A probe is an absolute file path (e.g. a static library) or a command name."""
    if probe.startswith("/"):
        return Path(probe).exists()
    path = os.environ.get("PATH", "") + ":" + _SBIN
    return shutil.which(probe, path=path) is not None


def missing_packages(wanted: dict[str, str]) -> list[str]:
    """The packages (values) whose probe (key: a command or a file) is not on this machine."""
    return sorted({package for probe, package in wanted.items() if not _present(probe)})


def _apt_get(*args: str) -> subprocess.CompletedProcess[bytes]:
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    argv = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-qq", *args]
    return subprocess.run(argv, capture_output=True, check=False)


def ensure_packages(wanted: dict[str, str]) -> None:
    """Install the missing packages of ``{probe: package}`` (apt-get update first), or raise
    SandboxError naming them and how to install them."""
    missing = missing_packages(wanted)
    if not missing:
        return
    if _apt_get("update").returncode == 0:
        _apt_get("install", "-y", "--no-install-recommends", *missing)
    if still_missing := missing_packages(wanted):
        names = " ".join(still_missing)
        raise SandboxError(
            f"missing Debian package(s) {names} and apt-get could not install them "
            f"(run as root: apt-get install {names})"
        )
