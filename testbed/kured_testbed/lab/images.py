"""Every image the lab's guests run, built on this machine (no registry is reachable) and
exported as docker-archive .tar files that `ctr -n k8s.io images import FILE` loads:

- PAUSE_IMAGE: the pod sandbox (containerd's sandbox_image), Kubernetes' pause.c compiled
  statically into a FROM scratch image, as build/pause does;
- KURED_IMAGE: our Dockerfile, unchanged, with --build-arg PYTHON_IMAGE=BASE_IMAGE (the
  python:3.11-slim stand-in of baseimage.py).

Each build is cached in the lab cache (images/<name>.tar with a .key beside it) and redone
only when its inputs change: pause.c; the base's recipe, CA bundle and pip settings; the
base image and kured's build context (Dockerfile, pyproject.toml, requirements.lock,
README.md, src/).

    archives = ensure_images(log_dir)     # [.../pause.tar, .../kured.tar]
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

from kured_testbed.controlplane import ensure_binaries
from kured_testbed.lab import baseimage
from kured_testbed.lab.buildah import Buildah, ImageBuildError, run_step
from kured_testbed.lab.cache import cache_root
from kured_testbed.lab.debian import ensure_packages
from kured_testbed.state import SandboxError

log = logging.getLogger("kured_testbed")

PAUSE_IMAGE = "localhost/kured-lab/pause:lab"
KURED_IMAGE = "localhost/kured:lab"
BASE_IMAGE = "localhost/debian-python:3.11"
REPO = Path(__file__).resolve().parents[3]
# What the Dockerfile copies (.dockerignore lets in nothing else).
KURED_INPUTS = ("Dockerfile", "pyproject.toml", "requirements.lock", "README.md", "src")
# {probe: Debian package}; /usr/include/stdio.h and libc.a come with libc6-dev.
HOST_PACKAGES = {
    "buildah": "buildah",
    "mmdebstrap": "mmdebstrap",
    "gcc": "gcc",
    "/usr/include/stdio.h": "libc6-dev",
}
# build/pause's flags; VERSION is what `pause -v` prints.
PAUSE_CFLAGS = ("-Os", "-Wall", "-Werror", "-static", "-DVERSION=kured-lab")
PAUSE_CONTAINERFILE = 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'


def images_dir() -> Path:
    return cache_root() / "images"


def _digest(parts: Iterable[bytes]) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(hashlib.sha256(part).digest())
    return sha.hexdigest()


def _in_context(relative: Path) -> bool:
    """Whether .dockerignore lets the file (path relative to the context) in."""
    ignored = any(p == "__pycache__" or p.endswith(".egg-info") for p in relative.parts)
    return relative.suffix != ".pyc" and not ignored


def tree_files(root: Path, names: Iterable[str]) -> list[Path]:
    """The files under root/NAME for each name, as the build context holds them, sorted."""
    files: list[Path] = []
    for name in names:
        path = root / name
        found = sorted(path.rglob("*")) if path.is_dir() else [path]
        files += [f for f in found if _in_context(f.relative_to(root)) and f.is_file()]
    return files


def files_key(root: Path, files: Iterable[Path], *extra: str) -> str:
    """A digest of each file's path (relative to root) and content, and of EXTRA."""
    parts = [part for f in files for part in (str(f.relative_to(root)).encode(), f.read_bytes())]
    return _digest([*parts, *(e.encode() for e in extra)])


def _cached(name: str, key: str) -> bool:
    archive = images_dir() / f"{name}.tar"
    marker = archive.with_suffix(".key")
    return archive.is_file() and marker.is_file() and marker.read_text().strip() == key


def _record(name: str, key: str) -> None:
    (images_dir() / f"{name}.key").write_text(key + "\n")


def _build_pause(buildah: Buildah, pause_c: Path) -> Path:
    archive = images_dir() / "pause.tar"
    key = _digest(
        [pause_c.read_bytes(), " ".join(PAUSE_CFLAGS).encode(), PAUSE_CONTAINERFILE.encode()]
    )
    if _cached("pause", key):
        return archive
    context = cache_root() / "pause-build"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Containerfile").write_text(PAUSE_CONTAINERFILE)
    binary = str(context / "pause")
    run_step("pause-compile", ["gcc", *PAUSE_CFLAGS, "-o", binary, str(pause_c)], buildah.log_dir)
    run_step("pause-strip", ["strip", binary], buildah.log_dir)
    buildah.build("pause-image", context, PAUSE_IMAGE)
    buildah.export("pause-export", PAUSE_IMAGE, archive)
    _record("pause", key)
    return archive


def _build_base(buildah: Buildah) -> str:
    """The base image's ID, built first if its recipe or host settings changed."""
    context = cache_root() / "base-build"
    baseimage.write_context(context)
    recipe = " ".join(baseimage.mmdebstrap_argv(Path("rootfs.tar")))
    key = files_key(context, [context / n for n in baseimage.CONTEXT_FILES], recipe)
    marker = context / "image.key"
    image_id = buildah.image_id(BASE_IMAGE)
    if image_id and marker.is_file() and marker.read_text().strip() == key:
        return image_id
    log.info("building the lab's Debian Python base image (about 1 minute)")
    rootfs = context / "rootfs.tar"
    rootfs.unlink(missing_ok=True)
    run_step("base-rootfs", baseimage.mmdebstrap_argv(rootfs), buildah.log_dir)
    buildah.build("base-image", context, BASE_IMAGE)
    rootfs.unlink()
    marker.write_text(key + "\n")
    built = buildah.image_id(BASE_IMAGE)
    if built is None:
        raise ImageBuildError(f"{BASE_IMAGE} missing after its build (log: {buildah.log_dir})")
    return built


def _build_kured(buildah: Buildah, base_id: str) -> Path:
    archive = images_dir() / "kured.tar"
    key = files_key(REPO, tree_files(REPO, KURED_INPUTS), base_id)
    if _cached("kured", key) and buildah.image_id(KURED_IMAGE):
        return archive
    log.info("building %s from the Dockerfile", KURED_IMAGE)
    buildah.build("kured-image", REPO, KURED_IMAGE, {"PYTHON_IMAGE": BASE_IMAGE})
    buildah.export("kured-export", KURED_IMAGE, archive)
    _record("kured", key)
    buildah.prune()
    return archive


def ensure_images(log_dir: Path) -> list[Path]:
    """Build (or reuse from cache) every lab image; return docker-archive .tar paths that
    `ctr -n k8s.io images import FILE` loads in a guest (the image refs above are inside)."""
    ensure_packages(HOST_PACKAGES)
    pause_c = ensure_binaries(log_dir / "control-plane-build.log") / "pause.c"
    if not pause_c.is_file():
        raise ImageBuildError(
            f"{pause_c} missing: rerun testbed/kured_testbed/build-control-plane.sh"
        )
    images_dir().mkdir(parents=True, exist_ok=True)
    buildah = Buildah(cache_root() / "buildah", log_dir)
    pause = _build_pause(buildah, pause_c)
    kured = _build_kured(buildah, _build_base(buildah))
    return [pause, kured]


def main() -> int:
    """`python -m kured_testbed.lab.images [LOG_DIR]`: build the images, print the .tar paths."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else cache_root() / "logs"
    try:
        archives = ensure_images(log_dir)
    except SandboxError as error:
        print(f"kured-lab: {error}", file=sys.stderr)
        return 1
    print("\n".join(map(str, archives)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
