"""Background processes the sandbox starts: spawned detached, recorded in pid files, and
signalled later only while the pid still names the same process.

A pid file holds just the PID (so `kill $(cat x.pid)` works). PIDs get reused, so beside it
`x.pid.start` records when that process started (field 22 of /proc/PID/stat, clock ticks since
boot), and before signalling we check that the PID's process started at that very tick: one
that took over the PID later is not ours and is left alone. Ticks are compared with ticks, not
with the wall clock, which steps (NTP, or a paused VM resynced) while boot ticks do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from kured_testbed.state import atomic_write

# Index of field 22 of /proc/PID/stat (the start time, clock ticks since boot) among the
# fields after the command name, as _stat_fields returns them.
_START_TICK = 19
# Children spawned by this process, kept until they are reaped (a Popen dropped while its
# child runs warns, and a child nobody waits for lingers as a zombie).
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    pid_file: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start argv in its own session (so it outlives us and a terminal's ^C does not reach it),
    output appended to log, and record its PID."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else dict(env),
        )
    _children[proc.pid] = proc
    write_pid(pid_file, proc.pid)
    return proc


def start_file(path: Path) -> Path:
    """Where the start tick of the process in pid file path is recorded."""
    return path.with_name(path.name + ".start")


def write_pid(path: Path, pid: int) -> None:
    """Record pid and its start tick (none when it is gone already: then it is not running)."""
    fields = _stat_fields(pid)
    atomic_write(start_file(path), f"{fields[_START_TICK] if fields else ''}\n")
    atomic_write(path, f"{pid}\n")


def remove_pid_file(path: Path) -> None:
    path.unlink(missing_ok=True)
    start_file(path).unlink(missing_ok=True)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2 :].split()


def alive(pid: int) -> bool:
    """Whether pid runs (a zombie does not; if it is our child, reap it)."""
    if (child := _children.get(pid)) is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    fields = _stat_fields(pid)
    if fields is None:
        return False
    if fields[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def running_pid(path: Path) -> int | None:
    """The PID recorded in path if that very process still runs, else None."""
    pid = read_pid(path)
    if pid is None or not alive(pid):
        return None
    fields = _stat_fields(pid)
    try:
        started = start_file(path).read_text().strip()
    except FileNotFoundError:
        return None
    if fields is None or fields[_START_TICK] != started:
        return None
    return pid


def cmdline(pid: int) -> list[str]:
    """The argv a running process was started with."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [arg.decode() for arg in raw.split(b"\0")[:-1]]


def kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL pid (a crash, not a shutdown) and wait until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def rss_bytes(pid: int) -> int | None:
    """Resident set size of pid (VmRSS), or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def signal_group(pid: int, sig: int) -> None:
    """Signal pid's whole process group when it leads one (its children go too), else pid."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def terminate(pids: Iterable[int], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever is still running after timeout, and wait for them to go."""
    pending = [pid for pid in pids if alive(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pending:
            signal_group(pid, sig)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            time.sleep(0.02)
            pending = [pid for pid in pending if alive(pid)]


def stop_pid_files(paths: Iterable[Path], timeout: float = 5.0) -> None:
    """Stop the processes recorded in paths (only those still ours) and remove the files."""
    files = list(paths)
    terminate([pid for path in files if (pid := running_pid(path)) is not None], timeout)
    for path in files:
        remove_pid_file(path)


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Wait for a child to exit without a thread per child (a supervisor may own hundreds):
    a pidfd becomes readable when the process exits."""
    with contextlib.suppress(ProcessLookupError):  # else: reaped already
        fd = os.pidfd_open(proc.pid)
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, on_exit)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
    _children.pop(proc.pid, None)
    return proc.wait()
