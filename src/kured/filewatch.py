"""Notice the moment a file appears or goes, with Linux inotify on its directory.

The reboot sentinel (``/var/run/reboot-required``) is created by the package
manager at any time; a stat every few seconds notices it late by up to that
interval and wakes the daemon for nothing in between. inotify costs nothing
while nothing happens. It is reached through asyncinotify (its system calls and
its event records); where it is not available (not Linux, no such directory, the
per-user limits of inotify reached) :class:`FileWatch` raises :class:`OSError`
and the caller polls instead.

The directory is watched rather than the file, because the file does not exist
while there is nothing to say, and tools replace it by a rename.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from asyncinotify import Event, Inotify, Mask, Watch

NAME_EVENTS = Mask.CREATE | Mask.DELETE | Mask.MOVED_FROM | Mask.MOVED_TO


class FileWatch:
    """Changes to whether one file exists: :meth:`changes` yields after each (or after a
    burst of them; the caller looks at the file itself)."""

    def __init__(self, path: str) -> None:
        target = Path(path)
        self._name = Path(target.name)
        self._changed = asyncio.Event()
        self._lost = False
        self._inotify = _Inotify.of(asyncio.get_running_loop())
        self._watch = self._inotify.add(self, target.parent)

    def __enter__(self) -> FileWatch:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._inotify.remove(self, self._watch)

    async def changes(self) -> AsyncIterator[None]:
        """Forever, once per change of the file (or lost events); OSError when the
        directory's watch is gone, so the caller can fall back to polling."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._lost:
                raise OSError("the directory is no longer watched")
            yield

    def notice(self, event: Event) -> None:
        if Mask.IGNORED in event.mask:
            self._lost = True
        if event.mask & (Mask.IGNORED | Mask.Q_OVERFLOW) or event.name == self._name:
            self._changed.set()


class _Inotify:
    """One inotify instance per event loop, shared by its FileWatches: a user may have only
    128 instances by default, and the benchmark runs 200 agents in one process. Its events
    are read as the loop sees its descriptor readable, each handed to the FileWatches of its
    directory (every one after an overflow)."""

    _of_loop: ClassVar[dict[asyncio.AbstractEventLoop, _Inotify]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._inotify = Inotify(sync_timeout=0)  # sync_get: None once nothing is left to read
        self._loop = loop
        self._watches: dict[int, list[FileWatch]] = {}  # by watch descriptor
        loop.add_reader(self._inotify.fd, self._read)

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Inotify:
        if loop not in cls._of_loop:
            cls._of_loop[loop] = cls(loop)
        return cls._of_loop[loop]

    def add(self, watch: FileWatch, directory: Path) -> Watch:
        try:
            added = self._inotify.add_watch(directory, NAME_EVENTS)
        except OSError:
            self._close_if_unused()
            raise
        self._watches.setdefault(added.wd, []).append(watch)
        return added

    def remove(self, watch: FileWatch, added: Watch) -> None:
        sharing = self._watches.get(added.wd, [])
        if watch in sharing:
            sharing.remove(watch)
        if not sharing and self._watches.pop(added.wd, None) is not None:
            self._inotify.rm_watch(added)
        self._close_if_unused()

    def _close_if_unused(self) -> None:
        if not self._watches:
            self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            del self._of_loop[self._loop]

    def _read(self) -> None:
        while (event := self._inotify.sync_get()) is not None:
            overflow = Mask.Q_OVERFLOW in event.mask  # no watch: any may have missed events
            wd = event.watch.wd if event.watch else None
            for key, sharing in list(self._watches.items()):
                for watch in sharing if overflow or key == wd else ():
                    watch.notice(event)
            if wd is not None and Mask.IGNORED in event.mask:
                self._watches.pop(wd, None)  # the kernel dropped it (its directory is gone)
