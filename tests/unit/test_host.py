"""The host: sentinel file/command with a timeout, boot id, reboot by command or signal."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kured import host as host_module
from kured.config import Config
from kured.host import (
    HOST_MOUNT_NS,
    CommandResult,
    HostError,
    LinuxHost,
    SimulatedHost,
    host_from_config,
    run_command,
)

BASE = Config(node_id="n1")
SHORT = timedelta(milliseconds=300)


def local_host(tmp_path: Path, **config: object) -> LinuxHost:
    """A LinuxHost that runs commands directly (no nsenter) with short timeouts."""
    return LinuxHost(
        replace(BASE, **config),  # type: ignore[arg-type]
        host_prefix=(),
        boot_id_path=tmp_path / "boot_id",
        sentinel_timeout=SHORT,
        reboot_timeout=SHORT,
    )


# --- sentinel -----------------------------------------------------------------------


async def test_sentinel_file(tmp_path: Path) -> None:
    sentinel = tmp_path / "reboot-required"
    host = local_host(tmp_path, reboot_sentinel=str(sentinel))
    assert not await host.reboot_required()
    sentinel.touch()
    assert await host.reboot_required()


@pytest.mark.parametrize(
    ("argv", "required", "warned"),
    [
        (("true",), True, False),
        (("false",), False, False),
        (("sh", "-c", "echo oops; exit 3"), False, True),
        (("/nonexistent/check",), False, True),
    ],
)
async def test_sentinel_command_exit_codes(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    argv: tuple[str, ...],
    required: bool,
    warned: bool,
) -> None:
    host = local_host(tmp_path, reboot_sentinel_command=argv)
    with caplog.at_level(logging.WARNING, logger="kured"):
        assert await host.reboot_required() is required
    assert bool(caplog.records) is warned


async def test_sentinel_warning_carries_exit_code_and_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = local_host(tmp_path, reboot_sentinel_command=("sh", "-c", "echo oops; exit 3"))
    with caplog.at_level(logging.WARNING, logger="kured"):
        await host.reboot_required()
    (record,) = caplog.records
    assert record.getMessage() == "Sentinel command ended with unexpected exit code: 3"
    assert record.output == "oops"  # type: ignore[attr-defined]


async def test_sentinel_arguments_are_not_run_through_a_shell(tmp_path: Path) -> None:
    check = ("sh", "-c", 'test "$1" = "a b;*"', "sh", "a b;*")
    assert await local_host(tmp_path, reboot_sentinel_command=check).reboot_required()


@pytest.mark.parametrize(
    "argv",
    [("sleep", "30"), ("sh", "-c", "sleep 30 & sleep 30")],
    ids=["hung", "hung-with-child"],
)
async def test_hung_sentinel_command_is_killed_and_counts_as_not_required(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, argv: tuple[str, ...]
) -> None:
    host = local_host(tmp_path, reboot_sentinel_command=argv)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="kured"):
        assert not await host.reboot_required()
    assert time.monotonic() - started < 5
    assert "timed out after 300ms and was killed" in caplog.text


def wait_until_written(path: Path) -> None:
    while not path.exists() or not path.read_text().strip():
        time.sleep(0.01)


async def test_cancelled_command_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    task = asyncio.create_task(
        run_command(("sh", "-c", f"echo $$ > {pid_file}; sleep 30"), timedelta(seconds=30))
    )
    await asyncio.to_thread(wait_until_written, pid_file)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


async def test_linux_host_enters_the_host_mount_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, ...]] = []

    async def fake_run(argv: Sequence[str], time_limit: timedelta) -> CommandResult:
        calls.append(tuple(argv))
        return CommandResult(0, "")

    monkeypatch.setattr(host_module, "run_command", fake_run)
    host = LinuxHost(replace(BASE, reboot_sentinel_command=("check", "--x")))
    assert await host.reboot_required()
    await host.reboot()
    assert HOST_MOUNT_NS == ("nsenter", "-m/proc/1/ns/mnt", "--")
    assert calls == [
        (*HOST_MOUNT_NS, "check", "--x"),
        (*HOST_MOUNT_NS, "/bin/systemctl", "reboot"),
    ]


# --- boot id ------------------------------------------------------------------------


def test_boot_id(tmp_path: Path) -> None:
    (tmp_path / "boot_id").write_text("0b2f8e6c-1111-2222-3333-444455556666\n")
    assert local_host(tmp_path).boot_id() == "0b2f8e6c-1111-2222-3333-444455556666"


def test_missing_boot_id_is_a_host_error(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="boot id"):
        local_host(tmp_path).boot_id()


def test_real_boot_id_path_reads_on_linux() -> None:
    if not Path("/proc/sys/kernel/random/boot_id").exists():
        pytest.skip("not Linux")
    assert len(LinuxHost(BASE).boot_id()) == 36


# --- reboot -------------------------------------------------------------------------


async def test_reboot_command_success(tmp_path: Path) -> None:
    marker = tmp_path / "rebooted"
    await local_host(tmp_path, reboot_command=("touch", str(marker))).reboot()
    assert marker.exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("sh", "-c", "echo denied; exit 1"), "exited with 1: denied"),
        (("sleep", "30"), "timed out after 300ms"),
        (("/nonexistent/reboot",), "cannot run the reboot command"),
    ],
)
async def test_reboot_command_failures_raise(
    tmp_path: Path, argv: tuple[str, ...], needle: str
) -> None:
    with pytest.raises(HostError, match=needle):
        await local_host(tmp_path, reboot_command=argv).reboot()


async def test_reboot_signal_goes_to_pid_1(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    await LinuxHost(replace(BASE, reboot_method="signal")).reboot()
    assert sent == [(1, 39)]


async def test_reboot_signal_failure_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", refuse)
    with pytest.raises(HostError, match="cannot send signal 39 to PID 1"):
        await LinuxHost(replace(BASE, reboot_method="signal", reboot_signal=39)).reboot()


# --- simulated host -----------------------------------------------------------------


def simulated(tmp_path: Path, **config: object) -> SimulatedHost:
    return SimulatedHost(replace(BASE, **config), tmp_path, sentinel_timeout=SHORT)  # type: ignore[arg-type]


async def test_simulated_reboot_command_writes_the_request_atomically(tmp_path: Path) -> None:
    host = simulated(tmp_path, reboot_command=("/bin/systemctl", "reboot", "--now"))
    await host.reboot()
    request = json.loads((tmp_path / "reboot-requested").read_text())
    assert request["method"] == "command"
    assert request["argv"] == ["/bin/systemctl", "reboot", "--now"]
    assert datetime.fromisoformat(request["time"]).tzinfo is not None
    assert await asyncio.to_thread(os.listdir, tmp_path) == ["reboot-requested"]


async def test_simulated_reboot_signal_goes_to_the_stand_in_init(tmp_path: Path) -> None:
    init = await asyncio.create_subprocess_exec("sleep", "30")
    try:
        (tmp_path / "init.pid").write_text(f"{init.pid}\n")
        await simulated(tmp_path, reboot_method="signal").reboot()
        assert await asyncio.wait_for(init.wait(), 5) == -39
    finally:
        if init.returncode is None:
            init.kill()
            await init.wait()


async def test_simulated_signal_without_init_pid_raises(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"init\.pid"):
        await simulated(tmp_path, reboot_method="signal").reboot()


async def test_simulated_host_reads_its_own_files(tmp_path: Path) -> None:
    (tmp_path / "boot_id").write_text("boot-2\n")
    (tmp_path / "reboot-required").touch()
    host = simulated(tmp_path, reboot_sentinel=str(tmp_path / "reboot-required"))
    assert host.boot_id() == "boot-2"
    assert await host.reboot_required()


async def test_simulated_sentinel_command_runs_without_nsenter(tmp_path: Path) -> None:
    assert await simulated(tmp_path, reboot_sentinel_command=("true",)).reboot_required()


def test_host_from_config_picks_the_simulated_host_only_in_the_sandbox(tmp_path: Path) -> None:
    chosen = host_from_config(BASE, {"KURED_SANDBOX_NODE_DIR": str(tmp_path)})
    assert isinstance(chosen, SimulatedHost)
    assert type(host_from_config(BASE, {})) is LinuxHost
    assert type(host_from_config(BASE, {"KURED_SANDBOX_NODE_DIR": ""})) is LinuxHost


def test_signal_numbers_match_go_kured() -> None:
    assert BASE.reboot_signal == signal.SIGRTMIN + 5


# --- boot time and pending packages (--max-node-age, reboot reasons) ----------------------


def test_boot_time_from_proc_stat(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nbtime 1795311901\nprocesses 9\n")
    host = LinuxHost(BASE, proc_stat_path=stat)
    assert host.boot_time() == datetime(2026, 11, 22, 1, 45, 1, tzinfo=UTC)


@pytest.mark.parametrize("text", ["cpu 1 2 3\n", "btime soon\n", None])
def test_unreadable_boot_time_is_a_host_error(tmp_path: Path, text: str | None) -> None:
    stat = tmp_path / "stat"
    if text is not None:
        stat.write_text(text)
    with pytest.raises(HostError, match="stat"):
        LinuxHost(BASE, proc_stat_path=stat).boot_time()


def test_real_boot_time_is_in_the_past() -> None:
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc")
    assert LinuxHost(BASE).boot_time() < datetime.now(UTC)


def test_pending_packages_are_ubuntus_list_beside_the_sentinel(tmp_path: Path) -> None:
    sentinel = tmp_path / "reboot-required"
    host = local_host(tmp_path, reboot_sentinel=str(sentinel))
    assert host.pending_packages() == ()
    (tmp_path / "reboot-required.pkgs").write_text("linux-image-6.1\n\nlibc6\nlinux-image-6.1\n")
    assert host.pending_packages() == ("linux-image-6.1", "libc6")


def test_a_sentinel_command_names_no_packages(tmp_path: Path) -> None:
    (tmp_path / "reboot-required.pkgs").write_text("libc6\n")
    host = local_host(
        tmp_path,
        reboot_sentinel=str(tmp_path / "reboot-required"),
        reboot_sentinel_command=("true",),
    )
    assert host.pending_packages() == ()


def test_simulated_boot_time_is_the_boot_id_files_mtime(tmp_path: Path) -> None:
    (tmp_path / "boot_id").write_text("boot-1\n")
    os.utime(tmp_path / "boot_id", (1_800_000_000, 1_800_000_000))
    assert simulated(tmp_path).boot_time() == datetime.fromtimestamp(1_800_000_000, UTC)
    (tmp_path / "boot_id").unlink()
    with pytest.raises(HostError, match="boot time"):
        simulated(tmp_path).boot_time()
