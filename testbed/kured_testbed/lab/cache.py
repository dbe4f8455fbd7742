"""Where the lab keeps what it builds once per user, and how builds are keyed by their inputs.

A cached artefact lives in a directory named after a digest of everything it was made from,
with a `done` marker written last: a changed input gives a new name (so a rebuild), and an
interrupted build is never taken for a finished one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

DONE = "done"
# Finished builds of one kind kept side by side (each guest disk is about 1.1 GB): the newest
# and the one before it, so two checkouts of different code can share a cache.
KEEP_BUILDS = 2


def cache_root() -> Path:
    """~/.cache/kured-lab, or $KURED_LAB_CACHE."""
    if override := os.environ.get("KURED_LAB_CACHE"):
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kured-lab"


def digest(parts: Iterable[str | bytes]) -> str:
    """A short stable digest of the inputs (each part length-prefixed, so no two lists of
    parts collide by concatenation)."""
    hasher = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        hasher.update(len(data).to_bytes(8, "big"))
        hasher.update(data)
    return hasher.hexdigest()[:16]


def tree_parts(root: Path) -> list[str | bytes]:
    """Every file under root as (relative path, contents or link target), in a fixed order."""
    parts: list[str | bytes] = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            parts += [str(path.relative_to(root)), "->" + os.readlink(path)]
        elif path.is_file():
            parts += [str(path.relative_to(root)), path.read_bytes()]
    return parts


def is_done(directory: Path) -> bool:
    return (directory / DONE).exists()


def mark_done(directory: Path) -> None:
    (directory / DONE).write_text("")


def mark_used(directory: Path) -> None:
    """Record that a finished build was used now (prune keeps the most recently used)."""
    os.utime(directory / DONE)


def prune(built: Path, keep: int = KEEP_BUILDS) -> list[Path]:
    """Remove finished builds of the same kind as built (<kind>-<digest> beside it) but the
    `keep` most recently used, built among them; returns what was removed. Unfinished ones
    are left alone: another process may be building them."""
    kind = built.name.rsplit("-", 1)[0]
    finished = [d for d in built.parent.glob(f"{kind}-*") if d != built and is_done(d)]
    finished.sort(key=lambda d: (d / DONE).stat().st_mtime, reverse=True)
    removed = finished[max(keep - 1, 0) :]
    for directory in removed:
        shutil.rmtree(directory, ignore_errors=True)
    return removed


def fresh_dir(directory: Path) -> Path:
    """An empty directory at this path (the remains of an interrupted build removed)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory
