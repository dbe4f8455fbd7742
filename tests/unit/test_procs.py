"""Pid files: a recorded process is recognised by its start tick, whatever the wall clock does,
and a process that took over the PID later is not ours."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import time_machine

from kured_testbed import procs

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def pid_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sleeper.pid"
    procs.spawn(SLEEPER, log=tmp_path / "sleeper.log", pid_file=path)
    yield path
    procs.stop_pid_files([path])


def test_the_pid_file_holds_only_the_pid(pid_file: Path) -> None:
    assert pid_file.read_text() == f"{procs.read_pid(pid_file)}\n"
    assert procs.running_pid(pid_file) == procs.read_pid(pid_file)


def test_a_wall_clock_step_leaves_the_process_ours(pid_file: Path) -> None:
    """What a paused VM does: the wall clock jumps an hour on, boot ticks do not."""
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with time_machine.travel(later):
        assert procs.running_pid(pid_file) == procs.read_pid(pid_file)
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with time_machine.travel(earlier):
        assert procs.running_pid(pid_file) == procs.read_pid(pid_file)


def test_another_process_on_the_recorded_pid_is_left_alone(tmp_path: Path) -> None:
    """A PID reused by a stranger: same number, a later start tick. Not stopped, not ours."""
    stranger = subprocess.Popen(SLEEPER)
    try:
        pid_file = tmp_path / "reused.pid"
        procs.write_pid(pid_file, stranger.pid)
        start = procs.start_file(pid_file)
        start.write_text(f"{int(start.read_text()) - 1}\n")  # what the earlier owner showed
        assert procs.running_pid(pid_file) is None
        procs.stop_pid_files([pid_file])
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_no_start_record_means_not_ours(pid_file: Path) -> None:
    pid = procs.read_pid(pid_file)
    assert pid is not None
    procs.start_file(pid_file).unlink()
    assert procs.running_pid(pid_file) is None
    procs.write_pid(pid_file, pid)  # so the fixture stops it


def test_stop_ends_the_process_and_removes_both_files(pid_file: Path) -> None:
    pid = procs.read_pid(pid_file)
    assert pid is not None
    procs.stop_pid_files([pid_file])
    assert not procs.alive(pid)
    assert not pid_file.exists() and not procs.start_file(pid_file).exists()
