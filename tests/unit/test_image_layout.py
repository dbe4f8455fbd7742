"""The Dockerfile's image without Docker: its build stage's RUN lines run for real (paths
moved under a temporary root), and the result starts from a read-only mount with the final
stage's ENV and ENTRYPOINT, loading only precompiled bytecode, its help and error texts as
complete as without the image's environment (PYTHONOPTIMIZE=2 would drop kuredctl's help).
The real image, built by the lab, is checked in tests/lab/test_image.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kured.ctl.cli import cli as kuredctl_group

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
# The image paths the build stage writes, moved under the temporary root here.
IMAGE_PATHS = ("/opt/venv", "/wheels")
_ABSOLUTE_PATH = re.compile(r"(?<![\w./$-])/[\w./*-]+")


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [argument for name, argument in self.instructions if name == keyword]

    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for line in self.all("ENV") for item in shlex.split(line))


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(ARG defaults before the first FROM, stages), continuation lines joined."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not (current or line.strip()):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
        else:
            logical.append(" ".join((current + line).split()))
            current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in logical:
        keyword, _, argument = instruction.partition(" ")
        if keyword == "FROM":
            stages.append(Stage(argument.split()[0]))
        elif stages:
            stages[-1].instructions.append((keyword, argument))
        elif keyword == "ARG":
            name, _, default = argument.partition("=")
            args[name] = default
    return args, stages


ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text())
BUILD, FINAL = STAGES[0], STAGES[-1]


def relocate(text: str, root: Path) -> str:
    for path in IMAGE_PATHS:
        text = re.sub(rf"(?<![\w./-]){re.escape(path)}\b", f"{root}{path}", text)
    return text


def test_dockerfile_is_the_image_we_mean() -> None:
    assert ARGS["PYTHON_IMAGE"] == "python:3.11-slim"
    assert BUILD.base == FINAL.base == "${PYTHON_IMAGE}"
    entrypoint = json.loads(FINAL.all("ENTRYPOINT")[0])
    assert entrypoint == ["/opt/venv/bin/kured"]
    assert FINAL.env()["PYTHONDONTWRITEBYTECODE"] == "1"
    assert FINAL.all("COPY") == ["--from=build /opt/venv /opt/venv"]
    run = " && ".join(FINAL.all("RUN"))
    assert "command -v nsenter" in run
    assert f"ln -s {entrypoint[0]} /usr/bin/kured" in run  # Go kured's path, in its manifests
    assert "--uid 65532" in run
    assert FINAL.all("USER") == ["0:0"]  # both reboot methods need root; see the Dockerfile
    assert any("compileall" in line for line in BUILD.all("RUN"))
    # python:3.11-slim has no .pyc at all: the final stage compiles the standard library.
    assert "compileall" in run and 'sysconfig.get_path("stdlib")' in run


def test_build_stage_touches_only_known_image_paths() -> None:
    for line in BUILD.all("RUN"):
        for path in _ABSOLUTE_PATH.findall(line):
            assert path.startswith(IMAGE_PATHS), f"{path} in RUN {line}"


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage run here: its COPY sources in a context dir, its RUN lines in bash with
    `python` the interpreter of this venv's Python."""
    root = tmp_path_factory.mktemp("image")
    context, bin_dir = root / "context", root / "bin"
    context.mkdir()
    bin_dir.mkdir()
    ignored = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for copy in BUILD.all("COPY"):
        for source in copy.split()[:-1]:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, context / source, ignore=ignored)
            else:
                shutil.copy2(ROOT / source, context / source)
    (bin_dir / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    env = {**os.environ, **BUILD.env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for line in BUILD.all("RUN"):
        subprocess.run(
            ["bash", "-euo", "pipefail", "-c", relocate(line, root)],
            cwd=context,
            env=env,
            check=True,
            capture_output=True,
        )
    return root


def run_read_only(
    root: Path, *argv: str, optimize: bool = True
) -> subprocess.CompletedProcess[str]:
    """argv with the final stage's ENV only (without PYTHONOPTIMIZE unless `optimize`),
    `root` bind-mounted read-only over itself."""
    env = {name: os.path.expandvars(relocate(value, root)) for name, value in FINAL.env().items()}
    if not optimize:
        env.pop("PYTHONOPTIMIZE", None)
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'
    command = ["unshare", "--mount", "--map-root-user", "sh", "-c", script, str(root), *argv]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


def test_kured_starts_from_a_read_only_filesystem(image_root: Path) -> None:
    entrypoint = relocate(json.loads(FINAL.all("ENTRYPOINT")[0])[0], image_root)
    version = run_read_only(image_root, entrypoint, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("kured ")
    usage = run_read_only(image_root, entrypoint, "--help")
    assert usage.returncode == 0, usage.stderr
    assert "--reboot-method" in usage.stdout


def test_kureds_modules_load_from_precompiled_bytecode(image_root: Path) -> None:
    python = str(image_root / "opt" / "venv" / "bin" / "python")
    result = run_read_only(image_root, python, "-v", "-c", "import kured.cli")
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = re.findall(r"^# code object from '?([^'\n]+)'?$", result.stderr, re.MULTILINE)
    ours = [path for path in loaded if path.startswith(str(image_root))]
    assert any("/kured/" in path for path in ours)
    assert [path for path in ours if not path.endswith(".pyc")] == []


# User-visible texts: every help, and errors for a bad flag and a missing kubeconfig.
TEXTS = [
    ("kured", "--help"),
    ("kured", "--reboot-method=bogus"),
    ("kured", "--period=soon"),
    ("kuredctl", "--help"),
    *[("kuredctl", name, "--help") for name in sorted(kuredctl_group.commands)],
    ("kuredctl", "unlock", "--bogus"),
    ("kuredctl", "--kubeconfig", "/nonexistent", "status"),
]


@pytest.mark.parametrize("argv", TEXTS, ids=" ".join)
def test_texts_are_complete_under_the_images_environment(
    image_root: Path, argv: tuple[str, ...]
) -> None:
    """The same output, read-only with the final stage's ENV, as with the interpreter's
    defaults: -O/-OO (PYTHONOPTIMIZE) would drop docstrings, which kuredctl's help is."""
    script = str(image_root / "opt" / "venv" / "bin" / argv[0])
    image = run_read_only(image_root, script, *argv[1:])
    plain = run_read_only(image_root, script, *argv[1:], optimize=False)
    assert (image.returncode, image.stdout, image.stderr) == (
        plain.returncode,
        plain.stdout,
        plain.stderr,
    )
    assert image.stdout or image.stderr


def test_the_wheel_holds_only_kured(image_root: Path) -> None:
    """The test bed (sandbox, lab, demo, chaos, bench) is not shipped: kured's wheel, as the
    build stage makes it, has kured/ and its metadata only."""
    (wheel,) = (image_root / "wheels").glob("kured-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"kured", wheel.name.split("-py3")[0] + ".dist-info"}
    assert [name for name in names if "sandbox" in name or "testbed" in name] == []
    assert "kured/ctl/cli.py" in names
