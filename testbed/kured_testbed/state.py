"""The sandbox's state directory: one place for every path, so the CLI, the supervisor and the
test fixtures agree on the layout documented in docs/architecture.md.

The state directory is given by the user (it may be a directory that holds other things), so the
sandbox only ever creates and removes the entries named here, never the directory's other contents.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_FLEET = "sbx"
FLEET_LABEL = "kured-sandbox/fleet"
STOP_SECONDS_ANNOTATION = "kured-sandbox/stop-seconds"


class SandboxError(Exception):
    """A failure the user can act on; the CLI prints it as one line and exits 1."""


class UsageError(SandboxError):
    """Bad input (unknown state dir, bad option value); the CLI exits 2."""


def atomic_write(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so readers (the daemon reading boot_id, the
    supervisor reading a spec) never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in path, or None when the file is absent or not (yet) valid."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class NodeDir:
    """The simulated host of one node: STATE/nodes/<node>/."""

    path: Path

    @property
    def sentinel(self) -> Path:
        return self.path / "reboot-required"

    @property
    def sentinel_pkgs(self) -> Path:
        return self.path / "reboot-required.pkgs"

    @property
    def boot_id(self) -> Path:
        return self.path / "boot_id"

    @property
    def reboot_requested(self) -> Path:
        return self.path / "reboot-requested"

    @property
    def init_pid(self) -> Path:
        return self.path / "init.pid"

    @property
    def kured_pid(self) -> Path:
        return self.path / "kured.pid"

    @property
    def kured_log(self) -> Path:
        return self.path / "kured.log"

    @property
    def reboots(self) -> Path:
        """One JSON line per simulated reboot: time, from/to boot id, reason."""
        return self.path / "reboots.jsonl"


@dataclass(frozen=True)
class FleetDir:
    """Per-fleet files: STATE/fleets/<fleet>/ (its parameters and the desired daemon spec)."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "fleet.json"

    @property
    def daemon_spec(self) -> Path:
        """Written by run-kured, removed by stop-kured, watched by the supervisor."""
        return self.path / "kured.json"

    @property
    def daemon_applied(self) -> Path:
        """The supervisor's acknowledgement: the generation of the spec it has applied."""
        return self.path / "kured.applied"


@dataclass(frozen=True)
class SandboxState:
    """Paths inside one state directory."""

    root: Path

    # Every entry the sandbox creates at the top level; a fresh `up` removes exactly these.
    ENTRIES = (
        "sandbox.json",
        "kubeconfig",
        "tokens.csv",
        "audit-policy.yaml",
        "audit.log",
        "sa.key",
        "certs",
        "components",
        "etcd",
        "pids",
        "logs",
        "nodes",
        "fleets",
    )

    @property
    def info(self) -> Path:
        """Written last by a successful `up`: its presence marks a sandbox state dir."""
        return self.root / "sandbox.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def component_kubeconfig(self, component: str) -> Path:
        """The controller-manager's and the scheduler's own identities (so the audit log
        tells their requests from the admin's)."""
        return self.root / "components" / f"{component}.kubeconfig"

    def sa_kubeconfig(self, namespace: str) -> Path:
        return self.root / f"kubeconfig-sa-{namespace}"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.log"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    def pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def node(self, name: str) -> NodeDir:
        return NodeDir(self.root / "nodes" / name)

    def fleet(self, name: str) -> FleetDir:
        return FleetDir(self.root / "fleets" / name)

    def fleets(self) -> list[FleetDir]:
        base = self.root / "fleets"
        if not base.is_dir():
            return []
        return [FleetDir(p) for p in sorted(base.iterdir()) if p.is_dir()]

    def node_dirs(self) -> list[NodeDir]:
        base = self.root / "nodes"
        if not base.is_dir():
            return []
        return [NodeDir(p) for p in sorted(base.iterdir()) if p.is_dir()]

    def require(self) -> None:
        """Fail with a one-line usage error unless `up` has run in this directory."""
        if not self.info.is_file():
            raise UsageError(
                f"no sandbox in {self.root} (run: kured-sandbox up --state-dir {self.root})"
            )

    def wipe(self) -> None:
        """Remove everything a previous sandbox left here (its processes must be stopped)."""
        for entry in self.ENTRIES:
            path = self.root / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        for path in self.root.glob("kubeconfig-sa-*"):
            path.unlink()
