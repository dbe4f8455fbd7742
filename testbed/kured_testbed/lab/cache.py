"""Where the lab keeps what it builds once per user (images, guest disks): reused across runs,
rebuilt when an input changes."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """KURED_LAB_CACHE, else $XDG_CACHE_HOME/kured-lab (~/.cache/kured-lab)."""
    if override := os.environ.get("KURED_LAB_CACHE"):
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kured-lab"
