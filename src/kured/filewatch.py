"""Notice the moment a file appears or goes, with Linux inotify on its directory.

The reboot sentinel (``/var/run/reboot-required``) is created by the package
manager at any time; a stat every few seconds notices it late by up to that
interval and wakes the daemon for nothing in between. inotify costs nothing
while nothing happens. It is reached through ctypes (libc's ``inotify_init1``
and ``inotify_add_watch``), so there is no dependency; where it is not available
(not Linux, no such directory, the per-user limits of inotify reached)
:class:`FileWatch` raises :class:`OSError` and the caller polls instead.

The directory is watched rather than the file, because the file does not exist
while there is nothing to say, and tools replace it by a rename.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import ClassVar

# <sys/inotify.h>
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_Q_OVERFLOW = 0x4000  # events were lost: the file may have changed
IN_IGNORED = 0x8000  # the watch is gone (directory deleted or unmounted)
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
NAME_EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name
READ_SIZE = 64 * 1024


class FileWatch:
    """Changes to whether one file exists: :meth:`changes` yields after each (or after a
    burst of them; the caller looks at the file itself)."""

    def __init__(self, path: str) -> None:
        target = Path(path)
        self._name = os.fsencode(target.name)
        self._changed = asyncio.Event()
        self._lost = False
        self._inotify = _Inotify.of(asyncio.get_running_loop())
        self._wd = self._inotify.add(self, os.fsencode(target.parent))

    def __enter__(self) -> FileWatch:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._inotify.remove(self, self._wd)

    async def changes(self) -> AsyncIterator[None]:
        """Forever, once per change of the file (or lost events); OSError when the
        directory's watch is gone, so the caller can fall back to polling."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._lost:
                raise OSError("the directory is no longer watched")
            yield

    def notice(self, mask: int, name: bytes) -> None:
        if mask & IN_IGNORED:
            self._lost = True
        if mask & (IN_IGNORED | IN_Q_OVERFLOW) or name == self._name:
            self._changed.set()


class _Inotify:
    """One inotify instance per event loop, shared by its FileWatches: a user may have only
    128 instances by default, and the benchmark runs 200 agents in one process."""

    _of_loop: ClassVar[dict[asyncio.AbstractEventLoop, _Inotify]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            self._add_watch, self._rm_watch = libc.inotify_add_watch, libc.inotify_rm_watch
            self._fd: int = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except AttributeError as err:
            raise OSError("inotify is not available") from err
        if self._fd < 0:
            raise _errno_error("inotify_init1")
        self._loop = loop
        self._watches: dict[int, list[FileWatch]] = {}
        loop.add_reader(self._fd, self._read)

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Inotify:
        if loop not in cls._of_loop:
            cls._of_loop[loop] = cls(loop)
        return cls._of_loop[loop]

    def add(self, watch: FileWatch, directory: bytes) -> int:
        wd: int = self._add_watch(self._fd, directory, NAME_EVENTS)
        if wd < 0:
            error = _errno_error(f"inotify_add_watch {os.fsdecode(directory)}")
            self._close_if_unused()
            raise error
        self._watches.setdefault(wd, []).append(watch)
        return wd

    def remove(self, watch: FileWatch, wd: int) -> None:
        sharing = self._watches.get(wd, [])
        if watch in sharing:
            sharing.remove(watch)
        if not sharing and self._watches.pop(wd, None) is not None:
            self._rm_watch(self._fd, wd)
        self._close_if_unused()

    def _close_if_unused(self) -> None:
        if not self._watches:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            del self._of_loop[self._loop]

    def _read(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return
        for wd, mask, name in _events(data):
            overflow = mask & IN_Q_OVERFLOW  # wd is -1: any watch may have missed events
            for key, sharing in self._watches.items():
                for watch in sharing if overflow or key == wd else ():
                    watch.notice(mask, name)


def _events(data: bytes) -> list[tuple[int, int, bytes]]:
    """(wd, mask, name) of each ``struct inotify_event`` in one read."""
    events, offset = [], 0
    while offset + EVENT_HEADER.size <= len(data):
        wd, mask, _cookie, length = EVENT_HEADER.unpack_from(data, offset)
        start = offset + EVENT_HEADER.size
        events.append((wd, mask, data[start : start + length].rstrip(b"\0")))
        offset = start + length
    return events


def _errno_error(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}")
