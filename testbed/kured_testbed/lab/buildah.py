"""buildah with the lab's own image store: vfs storage under the lab cache (no storage.conf,
overlay support, daemon or registry assumed), chroot isolation and the host's network (pip
in a build reaches PyPI the way the host does). Every step logs to its own file."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kured_testbed.state import SandboxError


class ImageBuildError(SandboxError):
    """A lab image could not be built; the message names the step and its log file."""


def run_step(step: str, argv: list[str], log_dir: Path) -> None:
    """Run one build step with its output in LOG_DIR/<step>.log; fail naming both."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{step}.log"
    with log.open("wb") as out:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        out.flush()
        try:
            result = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False
            )
            failed = result.returncode != 0
        except OSError as error:
            out.write(f"{error}\n".encode())
            failed = True
    if failed:
        raise ImageBuildError(f"building the lab images failed at step {step} (log: {log})")


@dataclass(frozen=True)
class Buildah:
    store: Path
    log_dir: Path

    def argv(self, *args: str) -> list[str]:
        """A buildah command line on the lab's store."""
        return [
            "buildah",
            "--root",
            str(self.store / "storage"),
            "--runroot",
            str(self.store / "run"),
            "--storage-driver",
            "vfs",
            *args,
        ]

    def build(
        self, step: str, context: Path, tag: str, build_args: dict[str, str] | None = None
    ) -> None:
        """`buildah bud` of CONTEXT/Dockerfile (or Containerfile) tagged TAG."""
        arg_flags = [f"--build-arg={name}={value}" for name, value in (build_args or {}).items()]
        bud = ["bud", "--isolation", "chroot", "--network", "host", "--pull=never", "-t", tag]
        run_step(step, self.argv(*bud, *arg_flags, str(context)), self.log_dir)

    def image_id(self, ref: str) -> str | None:
        """The ID of the image tagged REF in the store, None if there is none."""
        result = subprocess.run(
            self.argv("images", "--noheading", "--no-trunc", "--format", "{{.ID}}", ref),
            capture_output=True,
            text=True,
            check=False,
        )
        found = result.stdout.split()
        return found[0] if result.returncode == 0 and found else None

    def export(self, step: str, ref: str, archive: Path) -> None:
        """The image as a docker-archive .tar (what `ctr images import` loads), tagged REF."""
        partial = archive.with_name(archive.name + ".partial")
        partial.unlink(missing_ok=True)
        run_step(step, self.argv("push", f"{ref}", f"docker-archive:{partial}:{ref}"), self.log_dir)
        partial.replace(archive)

    def prune(self) -> None:
        """Drop untagged images (those a rebuild replaced; vfs stores each in full). Best
        effort: an image a working container still uses stays, and that is no build failure."""
        with (self.log_dir / "prune.log").open("wb") as out:
            subprocess.run(self.argv("rmi", "--prune"), stdout=out, stderr=out, check=False)
