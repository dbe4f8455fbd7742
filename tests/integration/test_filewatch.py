"""kured.filewatch (on asyncinotify) against the real kernel's inotify: the sentinel's
appearance (created, or renamed into place as package tools do) and removal wake the watch,
other files do not; watches share one inotify instance; a vanished directory ends the watch
with OSError."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kured import filewatch
from kured.filewatch import FileWatch

pytestmark = pytest.mark.integration


async def woke(watch: FileWatch, within: float = 2.0) -> bool:
    """Whether the watch tells of a change within the time (a new iterator each time: one
    cut short by the timeout is finished)."""
    try:
        await asyncio.wait_for(anext(aiter(watch.changes())), within)
    except TimeoutError:
        return False
    return True


async def test_the_sentinel_coming_and_going_wakes_the_watch(tmp_path: Path) -> None:
    sentinel = tmp_path / "reboot-required"
    with FileWatch(str(sentinel)) as watch:
        (tmp_path / "reboot-required.pkgs").write_text("linux-image\n")
        assert not await woke(watch, 0.3)
        staged = tmp_path / ".reboot-required.tmp"
        staged.write_text("*** System restart required ***\n")
        os.rename(staged, sentinel)
        assert await woke(watch)
        sentinel.unlink()
        assert await woke(watch)
        sentinel.touch()
        assert await woke(watch)


async def test_watches_share_one_inotify_instance(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    loop = asyncio.get_running_loop()
    with FileWatch(str(first / "reboot-required")) as one:
        with FileWatch(str(second / "reboot-required")) as two:
            assert list(filewatch._Inotify._of_loop) == [loop]
            (second / "reboot-required").touch()
            assert await woke(two)
            assert not await woke(one, 0.3)
        (first / "reboot-required").touch()
        assert await woke(one)
    assert loop not in filewatch._Inotify._of_loop  # closed with its last watch


async def test_a_vanished_directory_ends_the_watch(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    with FileWatch(str(directory / "reboot-required")) as watch:
        directory.rmdir()
        with pytest.raises(OSError, match="no longer watched"):
            await asyncio.wait_for(anext(aiter(watch.changes())), 2.0)


async def test_a_missing_directory_is_an_oserror() -> None:
    with pytest.raises(OSError, match="No such file"):
        FileWatch("/nonexistent-kured-test/reboot-required")
