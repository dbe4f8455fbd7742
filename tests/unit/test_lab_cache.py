"""The lab's cache keeps a bounded number of builds of one kind (guest disks are 1.1 GB)."""

from __future__ import annotations

import os
from pathlib import Path

from kured_testbed.lab import cache


def _build(root: Path, name: str, used_at: float, *, done: bool = True) -> Path:
    directory = root / name
    directory.mkdir()
    if done:
        cache.mark_done(directory)
        os.utime(directory / cache.DONE, (used_at, used_at))
    return directory


def test_prune_keeps_the_most_recently_used_and_what_is_still_being_built(
    tmp_path: Path,
) -> None:
    oldest = _build(tmp_path, "disk-aaaa", 100.0)
    recent = _build(tmp_path, "disk-bbbb", 300.0)
    older = _build(tmp_path, "disk-cccc", 200.0)
    building = _build(tmp_path, "disk-dddd", 0.0, done=False)
    rootfs = _build(tmp_path, "rootfs-eeee", 50.0)
    new = _build(tmp_path, "disk-ffff", 400.0)
    assert sorted(cache.prune(new)) == [oldest, older]
    assert sorted(p for p in tmp_path.iterdir()) == [recent, building, new, rootfs]


def test_a_used_build_counts_as_recent(tmp_path: Path) -> None:
    reused = _build(tmp_path, "disk-aaaa", 100.0)
    other = _build(tmp_path, "disk-bbbb", 200.0)
    cache.mark_used(reused)
    new = _build(tmp_path, "disk-cccc", 50.0)
    assert cache.prune(new) == [other]
    assert reused.exists()
