"""The lab's images as built (buildah, cached under ~/.cache/kured-lab; the first run builds
them in about 3 minutes): archives `ctr images import` takes with the refs the guests use,
and kured's image as it runs there: nothing compiled at start, every help text complete, no
test bed inside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kured.ctl.cli import cli as kuredctl_group
from kured_testbed.lab.buildah import Buildah
from kured_testbed.lab.cache import cache_root
from kured_testbed.lab.images import KURED_IMAGE, PAUSE_IMAGE, ensure_images


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return ensure_images(tmp_path_factory.mktemp("image-logs"))


@pytest.fixture(scope="module")
def buildah(tmp_path_factory: pytest.TempPathFactory) -> Buildah:
    return Buildah(cache_root() / "buildah", tmp_path_factory.mktemp("buildah-logs"))


@contextmanager
def container(buildah: Buildah, image: str) -> Iterator[str]:
    made = subprocess.run(
        buildah.argv("from", "-q", "--pull=never", image),
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    name = made.stdout.strip()
    try:
        yield name
    finally:
        subprocess.run(buildah.argv("rm", name), capture_output=True, check=False)


def run_in(buildah: Buildah, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """argv in the container with the image's ENV (chroot, as `buildah run` does)."""
    run = buildah.argv("run", "--isolation", "chroot", name, "--", *argv)
    return subprocess.run(run, capture_output=True, text=True, check=False)


def test_archives_carry_the_refs_guests_use(archives: list[Path]) -> None:
    assert [a.name for a in archives] == ["pause.tar", "kured.tar"]  # pause first: pods need it
    for archive, ref in zip(archives, (PAUSE_IMAGE, KURED_IMAGE), strict=True):
        with tarfile.open(archive) as tar:
            member = tar.extractfile("manifest.json")
            assert member is not None
            (manifest,) = json.load(member)
        assert manifest["RepoTags"] == [ref]


def test_a_second_call_reuses_the_cache(archives: list[Path], tmp_path: Path) -> None:
    stamps = [a.stat().st_mtime_ns for a in archives]
    assert ensure_images(tmp_path) == archives
    assert [a.stat().st_mtime_ns for a in archives] == stamps
    assert not (tmp_path / "kured-image.log").exists()


def test_pause_is_the_static_pause(archives: list[Path], buildah: Buildah) -> None:
    with container(buildah, PAUSE_IMAGE) as name:
        version = run_in(buildah, name, "/pause", "-v")
    assert version.stdout.startswith("pause.c "), version.stderr


def test_kured_starts_without_compiling_anything(archives: list[Path], buildah: Buildah) -> None:
    with container(buildah, KURED_IMAGE) as name:
        started = run_in(buildah, name, "python", "-v", "-c", "import kured.agent, kured.cli")
    assert started.returncode == 0, started.stderr[-2000:]
    from_source = [
        line for line in started.stderr.splitlines() if line.startswith("# code object from")
    ]
    assert len(from_source) > 100  # python -v names every module it compiles
    assert [line for line in from_source if not line.rstrip("'").endswith(".pyc")] == []


def test_kuredctl_help_is_complete(archives: list[Path], buildah: Buildah) -> None:
    """Each help as this venv's kuredctl shows it (docstrings kept), both without a tty."""
    commands = [[], *[[name] for name in sorted(kuredctl_group.commands)]]
    with container(buildah, KURED_IMAGE) as name:
        shown = [run_in(buildah, name, "kuredctl", *argv, "--help").stdout for argv in commands]
    here = Path(sys.executable).with_name("kuredctl")
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    expected = [
        subprocess.run(
            [here, *argv, "--help"], capture_output=True, text=True, env=env, check=True
        ).stdout
        for argv in commands
    ]
    assert shown == expected


def test_the_test_bed_is_not_in_the_image(archives: list[Path], buildah: Buildah) -> None:
    with container(buildah, KURED_IMAGE) as name:
        found = run_in(buildah, name, "python", "-c", "import kured_testbed")
        version = run_in(buildah, name, "kured", "--version")
    assert "No module named 'kured_testbed'" in found.stderr
    assert version.stdout.startswith("kured ")
