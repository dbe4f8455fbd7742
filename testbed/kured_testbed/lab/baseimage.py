"""The stand-in for python:3.11-slim (no registry is reachable): a Debian bookworm rootfs made
with mmdebstrap holding what our Dockerfile uses of the slim image (python, venv, pip,
nsenter, useradd/groupadd, CA certificates), imported with buildah.

Like python:3.11-slim, whose build deletes every .pyc, it carries no standard-library bytecode.
pip in a build reaches PyPI through this machine's proxy, which only the host's CA bundle
trusts: the bundle is copied in and named in /etc/pip.conf, with the host's http(s) index
settings."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGES = (
    "python3",
    "python3-venv",
    "python3-pip",
    "python-is-python3",
    "ca-certificates",
    "util-linux",
    "passwd",
)
SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# The build context next to rootfs.tar (what the base image key covers).
CONTEXT_FILES = ("Containerfile", "pip.conf", "host-ca-bundle.crt")
CA_IN_IMAGE = "/usr/local/share/kured-lab/host-ca-bundle.crt"
# python:3.11-slim's own settings that our Dockerfile relies on.
CONTAINERFILE = f"""\
FROM scratch
ADD rootfs.tar /
COPY host-ca-bundle.crt {CA_IN_IMAGE}
COPY pip.conf /etc/pip.conf
ENV LANG=C.UTF-8
CMD ["python3"]
"""
# What python:3.11-slim's build removes: bytecode of the standard library.
_DROP_BYTECODE = (
    'find "$1/usr/lib/python3" "$1/usr/lib/python3.11" -name __pycache__ -prune -exec rm -rf {} +'
)
# debian:*-slim's /etc/dpkg/dpkg.cfg.d/docker: no documentation, manuals or translations.
_SLIM_DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
    "path-exclude=/usr/share/locale/*",
)
_INDEX_KEYS = ("index-url", "extra-index-url", "trusted-host")
_DEFAULT_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def mmdebstrap_argv(rootfs_tar: Path) -> list[str]:
    """merged-usr hook: /usr merged by symlinks, so no usrmerge package (and the 47 MB of
    perl it needs); dpkg excludes: those of debian:bookworm-slim, python:3.11-slim's base."""
    return [
        "mmdebstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        *(f"--dpkgopt={option}" for option in _SLIM_DPKG_OPTIONS),
        f"--customize-hook={_DROP_BYTECODE}",
        "bookworm",
        str(rootfs_tar),
        *SOURCES,
    ]


def host_pip_settings() -> dict[str, str]:
    """The host's merged pip configuration (`pip config list`: files and PIP_* variables,
    the environment winning), keys without their section; empty without pip."""
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    except OSError:
        return {}
    settings: dict[str, str] = {}
    for line in sorted(listed.splitlines(), key=lambda line: line.startswith(":env:")):
        name, sep, quoted = line.partition("=")
        if sep and name.startswith(("global.", ":env:.")):
            settings[name.split(".", 1)[1]] = str(ast.literal_eval(quoted))
    return settings


def host_ca_bundle(settings: dict[str, str]) -> Path:
    """The CA bundle the host's pip trusts (its cert setting, else OpenSSL's, else Debian's)."""
    for candidate in (settings.get("cert"), os.environ.get("SSL_CERT_FILE")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return _DEFAULT_CA


def _reachable_in_build(value: str) -> str:
    """Only http(s) indexes: file:// ones are this host's directories, absent in a build."""
    return " ".join(word for word in value.split() if word.startswith(("http://", "https://")))


def pip_conf(settings: dict[str, str]) -> str:
    lines = ["[global]", f"cert = {CA_IN_IMAGE}"]
    for key in _INDEX_KEYS:
        if key == "trusted-host" and key in settings:
            lines.append(f"{key} = {settings[key]}")
        elif value := _reachable_in_build(settings.get(key, "")):
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def write_context(context: Path) -> None:
    """Containerfile, pip.conf and the host's CA bundle in CONTEXT (rootfs.tar comes from
    mmdebstrap_argv)."""
    settings = host_pip_settings()
    context.mkdir(parents=True, exist_ok=True)
    (context / "Containerfile").write_text(CONTAINERFILE)
    (context / "pip.conf").write_text(pip_conf(settings))
    shutil.copyfile(host_ca_bundle(settings), context / "host-ca-bundle.crt")
