"""The node's host: does it need a reboot, which boot is this, and reboot it.

Everything the daemon does to the machine goes through :class:`Host`, so the
sandbox can swap in :class:`SimulatedHost` and never touch the real machine.
Commands are argv tuples (split shell-style by the CLI), never run through a
shell, and always bounded by a timeout: a hung sentinel or reboot command is
killed together with its children instead of wedging the daemon (Go kured has no
timeout, kured#1412).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from kured.config import Config
from kured.durations import format_go_duration

log = logging.getLogger(__name__)

SANDBOX_NODE_DIR_ENV = "KURED_SANDBOX_NODE_DIR"
# Enter the host's mount namespace through PID 1 (needs hostPID and privileges), as Go does.
HOST_MOUNT_NS = ("nsenter", "-m/proc/1/ns/mnt", "--")
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
# The kernel's boot time (``btime``, Unix seconds); /proc is not namespaced for it.
PROC_STAT_PATH = Path("/proc/stat")
PACKAGES_SUFFIX = ".pkgs"  # Ubuntu's list of packages beside /var/run/reboot-required
SENTINEL_TIMEOUT = timedelta(seconds=30)
REBOOT_TIMEOUT = timedelta(seconds=60)
_OUTPUT_TAIL = 500  # characters of a failed command's output worth a log line


class HostError(Exception):
    """The host could not do what was asked; the message says what and why."""


class Host(Protocol):
    """What the daemon needs from the machine it runs on."""

    async def reboot_required(self) -> bool:
        """Sentinel file present, or sentinel command exited 0."""
        ...

    def boot_id(self) -> str:
        """Changes on every boot; tells a real reboot from a pod restart."""
        ...

    def boot_time(self) -> datetime:
        """When the running system booted (``--max-node-age``); :class:`HostError` if unknown."""
        ...

    def pending_packages(self) -> tuple[str, ...]:
        """The packages that asked for the reboot, when the OS says (else empty)."""
        ...

    async def reboot(self) -> None:
        """Start the reboot (``--reboot-method``); raise :class:`HostError` if that failed."""
        ...


def host_from_config(config: Config, environ: Mapping[str, str]) -> Host:
    """The simulated host inside the sandbox (``KURED_SANDBOX_NODE_DIR``), else the real one."""
    node_dir = environ.get(SANDBOX_NODE_DIR_ENV)
    if node_dir:
        return SimulatedHost(config, Path(node_dir))
    return LinuxHost(config)


@dataclass(frozen=True)
class CommandResult:
    """How a command ended: ``returncode`` is None when it timed out and was killed."""

    returncode: int | None
    output: str


async def run_command(argv: Sequence[str], time_limit: timedelta) -> CommandResult:
    """Run ``argv`` with stdout and stderr captured together; kill it after ``time_limit``.

    The command gets its own session so the kill reaches every process it started
    (a shell script's children would otherwise keep the pipes, and us, waiting).
    Raises :class:`OSError` if the command cannot be started at all.
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(time_limit.total_seconds()):  # see kured.agent.woken
            output, _ = await process.communicate()
    except TimeoutError:
        return CommandResult(None, "")
    finally:
        if process.returncode is None:  # timed out, or we are being cancelled
            _kill_session(process.pid)
            await process.wait()
    return CommandResult(process.returncode, output.decode(errors="replace"))


def _kill_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
        os.killpg(pid, signal.SIGKILL)


def _tail(output: str) -> str:
    return output.strip()[-_OUTPUT_TAIL:]


class LinuxHost:
    """The real node, seen from a pod with ``hostPID: true``.

    Sentinel and reboot commands run in the host's mount namespace (``nsenter``),
    so they see the host's files and binaries, not the container's.
    """

    def __init__(
        self,
        config: Config,
        *,
        host_prefix: Sequence[str] = HOST_MOUNT_NS,
        boot_id_path: Path = BOOT_ID_PATH,
        proc_stat_path: Path = PROC_STAT_PATH,
        sentinel_timeout: timedelta = SENTINEL_TIMEOUT,
        reboot_timeout: timedelta = REBOOT_TIMEOUT,
    ) -> None:
        self._config = config
        self._host_prefix = tuple(host_prefix)
        self._boot_id_path = boot_id_path
        self._proc_stat_path = proc_stat_path
        self._sentinel_timeout = sentinel_timeout
        self._reboot_timeout = reboot_timeout

    async def reboot_required(self) -> bool:
        if not self._config.reboot_sentinel_command:
            return await asyncio.to_thread(os.path.exists, self._config.reboot_sentinel)
        return await self._run_sentinel_command()

    def boot_id(self) -> str:
        try:
            return self._boot_id_path.read_text().strip()
        except OSError as error:
            raise HostError(
                f"cannot read the boot id from {self._boot_id_path}: {error}"
            ) from error

    def boot_time(self) -> datetime:
        try:
            for line in self._proc_stat_path.read_text().splitlines():
                if line.startswith("btime "):
                    return datetime.fromtimestamp(int(line.split()[1]), UTC)
        except (OSError, ValueError, IndexError) as error:
            raise HostError(
                f"cannot read the boot time from {self._proc_stat_path}: {error}"
            ) from error
        raise HostError(f"no btime line in {self._proc_stat_path}")

    def pending_packages(self) -> tuple[str, ...]:
        """Ubuntu's ``<sentinel>.pkgs``, one package a line, in order, without repeats.

        Only beside a sentinel file: a sentinel command says nothing about packages.
        """
        if self._config.reboot_sentinel_command:
            return ()
        try:
            text = Path(self._config.reboot_sentinel + PACKAGES_SUFFIX).read_text()
        except (OSError, UnicodeDecodeError):
            return ()
        return tuple(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))

    async def reboot(self) -> None:
        if self._config.reboot_method == "signal":
            self._send_reboot_signal()
        else:
            await self._run_reboot_command()

    async def _run_sentinel_command(self) -> bool:
        """Exit 0 = reboot needed, 1 = not needed; anything else = not needed + warning."""
        argv = (*self._host_prefix, *self._config.reboot_sentinel_command)
        fields = {"cmd": " ".join(self._config.reboot_sentinel_command)}
        try:
            result = await run_command(argv, self._sentinel_timeout)
        except OSError as error:
            log.warning("Cannot run the sentinel command: %s", error, extra=fields)
            return False
        if result.returncode is None:
            log.warning(
                "Sentinel command timed out after %s and was killed; taking it as not required",
                format_go_duration(self._sentinel_timeout),
                extra=fields,
            )
        elif result.returncode not in (0, 1):
            log.warning(
                "Sentinel command ended with unexpected exit code: %d",
                result.returncode,
                extra={**fields, "output": _tail(result.output)},
            )
        return result.returncode == 0

    def _send_reboot_signal(self) -> None:
        pid = self._init_pid()
        log.info("Sending signal %d to PID %d", self._config.reboot_signal, pid)
        try:
            os.kill(pid, self._config.reboot_signal)
        except OSError as error:
            raise HostError(
                f"cannot send signal {self._config.reboot_signal} to PID {pid}: {error}"
            ) from error

    def _init_pid(self) -> int:
        return 1

    async def _run_reboot_command(self) -> None:
        argv = (*self._host_prefix, *self._config.reboot_command)
        log.info("Running reboot command: %s", " ".join(self._config.reboot_command))
        try:
            result = await run_command(argv, self._reboot_timeout)
        except OSError as error:
            raise HostError(f"cannot run the reboot command: {error}") from error
        if result.returncode is None:
            timeout = format_go_duration(self._reboot_timeout)
            raise HostError(f"the reboot command timed out after {timeout} and was killed")
        if result.returncode != 0:
            raise HostError(
                f"the reboot command exited with {result.returncode}: {_tail(result.output)}"
            )


class SimulatedHost(LinuxHost):
    """A sandbox node: a directory the node simulator watches (docs/architecture.md).

    The sentinel is the file the sandbox passes as ``--reboot-sentinel`` (a sentinel
    command runs as given, without nsenter); the boot id is ``<dir>/boot_id``. A
    reboot never touches the real machine: the command method records the request in
    ``<dir>/reboot-requested``, the signal method signals the PID in ``<dir>/init.pid``.
    """

    def __init__(
        self, config: Config, node_dir: Path, *, sentinel_timeout: timedelta = SENTINEL_TIMEOUT
    ) -> None:
        super().__init__(
            config,
            host_prefix=(),
            boot_id_path=node_dir / "boot_id",
            sentinel_timeout=sentinel_timeout,
        )
        self._node_dir = node_dir

    def boot_time(self) -> datetime:
        """The simulator rewrites ``boot_id`` on every simulated boot: its mtime is the boot."""
        path = self._node_dir / "boot_id"
        try:
            return datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError as error:
            raise HostError(f"cannot read the simulated boot time from {path}: {error}") from error

    def _init_pid(self) -> int:
        pid_file = self._node_dir / "init.pid"
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError) as error:
            raise HostError(
                f"cannot read the simulated init PID from {pid_file}: {error}"
            ) from error

    async def _run_reboot_command(self) -> None:
        request = {
            "method": "command",
            "argv": list(self._config.reboot_command),
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        target = self._node_dir / "reboot-requested"
        log.info("Requesting a simulated reboot: %s", target)
        try:
            _write_atomically(target, json.dumps(request) + "\n")
        except OSError as error:
            raise HostError(f"cannot write {target}: {error}") from error


def _write_atomically(target: Path, text: str) -> None:
    """Write to a temporary file in the same directory, then rename over ``target``,
    so a reader sees either no file or the whole request."""
    with tempfile.NamedTemporaryFile(
        "w", dir=target.parent, prefix=f".{target.name}.", delete=False
    ) as temporary:
        temporary.write(text)
    try:
        os.replace(temporary.name, target)
    except OSError:
        os.unlink(temporary.name)
        raise
