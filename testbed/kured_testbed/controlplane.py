"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler, each a detached process recorded under STATE/pids.

Debian has no kube-apiserver binary, so build-control-plane.sh builds the three Kubernetes
binaries once from Debian's source package into a per-user cache; starting is then seconds.

    cp = ControlPlane.start(Path("/tmp/sbx"))      # fresh control plane, admin kubeconfig
    async with cp.client() as ...                  # lightkube AsyncClient as the admin
    cp.stop()                                      # everything the sandbox started in that dir
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig

import kured
from kured_testbed import procs
from kured_testbed.state import SandboxError, SandboxState, atomic_write, read_json

log = logging.getLogger("kured_testbed")

BUILD_SCRIPT = Path(__file__).with_name("build-control-plane.sh")
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE_BINARIES = ("kubelet", "kube-proxy")  # the lab's real nodes
# Start order; `down` stops in reverse.
COMPONENTS = ("etcd", *KUBE_BINARIES)
ADMIN_USER = "sandbox-admin"
# Token users: the admin (everything) and the two components, as the bootstrap RBAC names them.
_USERS = {
    "admin": (ADMIN_USER, "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", ""),
    "kube-scheduler": ("system:kube-scheduler", ""),
    # The node simulator: its writes (pod status, final deletes) are not the admin's.
    "kubelet": ("sandbox-kubelet", "system:masters"),
}

_UserTable = Mapping[str, tuple[str, str]]

_AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "rules": [
        # Request bodies of node writes, so a cordon patch shows what it changed; their
        # RequestReceived stage too, written before the write is applied, so a cordon whose
        # API server was killed before it answered is still on record (the chaos checker).
        {
            "level": "Request",
            "verbs": ["patch", "update"],
            "resources": [{"group": "", "resources": ["nodes"]}],
        },
        {"level": "Metadata", "omitStages": ["RequestReceived"]},
    ],
}


def cache_root() -> Path:
    """The per-user binary cache; the same rule as build-control-plane.sh."""
    if override := os.environ.get("KURED_SANDBOX_CACHE"):
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kured-sandbox"


def cached_binaries() -> Path | None:
    """A cached build (bin-<version>) of build-control-plane.sh's current recipe, if any."""
    recipe = re.search(r"^recipe=(\S+)$", BUILD_SCRIPT.read_text(), re.MULTILINE)
    for candidate in sorted(cache_root().glob("bin-*")):
        if (
            all(os.access(candidate / name, os.X_OK) for name in (*KUBE_BINARIES, *NODE_BINARIES))
            and recipe is not None
            and _read(candidate / "RECIPE") == recipe[1]
        ):
            return candidate
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def ensure_binaries(build_log: Path) -> Path:
    """The cached binaries, building them first on a machine that has none (about 5 min)."""
    if found := cached_binaries():
        return found
    log.info("building the control plane once (about 5 minutes; log: %s)", build_log)
    build_log.parent.mkdir(parents=True, exist_ok=True)
    with build_log.open("ab") as err:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=err, check=False
        )
    built = cached_binaries()
    if result.returncode != 0 or built is None:
        raise SandboxError(f"building the control plane failed: {_last_line(build_log)}")
    return built


def require_tool(name: str, package: str) -> str:
    """The path of a command the sandbox needs, or a one-line error naming its Debian package."""
    path = shutil.which(name)
    if path is None:
        raise SandboxError(f"{name} not found (install the Debian package {package})")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def check_port_free(port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise SandboxError(f"port {port} on 127.0.0.1 is already in use") from None


def _last_line(path: Path) -> str:
    """The last non-empty line of a log, to quote in a one-line error."""
    with contextlib.suppress(FileNotFoundError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:300]
    return f"no output in {path}"


def kubeconfig_text(server: str, ca_pem: bytes, token: str, user: str) -> str:
    """A kubeconfig for one token user (the admin, or a ServiceAccount's token)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sandbox",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": user}}],
        "current-context": "sandbox",
    }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass(frozen=True)
class Options:
    """What another user of the control plane (the real-node lab) adds to the sandbox's: more
    token users (name -> (user, groups); each gets STATE/components/<name>.kubeconfig) and API
    server flags that replace or extend the sandbox's (e.g. authorization-mode)."""

    users: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    apiserver_flags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int


class _Launcher:
    """The command lines of the four components, given the binaries and the state dir."""

    def __init__(
        self, state: SandboxState, binaries: Path, etcd: str, ports: _Ports, options: Options
    ) -> None:
        self.state = state
        self.binaries = binaries
        self.etcd = etcd
        self.ports = ports
        self.options = options

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def serving_cert(self) -> Path:
        """Self-signed by kube-apiserver into --cert-dir (the file holds the leaf and its CA)."""
        return self.state.root / "certs" / "apiserver.crt"

    def argv(self, name: str) -> list[str]:
        return {
            "etcd": self._etcd,
            "kube-apiserver": self._apiserver,
            "kube-controller-manager": self._controller_manager,
            "kube-scheduler": self._scheduler,
        }[name]()

    def _etcd(self) -> list[str]:
        client = f"http://127.0.0.1:{self.ports.etcd_client}"
        peer = f"http://127.0.0.1:{self.ports.etcd_peer}"
        return [
            self.etcd,
            "--name=sandbox",
            f"--data-dir={self.state.root / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=sandbox={peer}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]

    def _apiserver(self) -> list[str]:
        root = self.state.root
        flags = self.options.apiserver_flags
        sandbox = [
            str(self.binaries / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports.apiserver}",
            "--insecure-port=0",
            f"--cert-dir={root / 'certs'}",
            f"--service-account-key-file={root / 'sa.key'}",
            f"--service-account-signing-key-file={root / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--token-auth-file={root / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            f"--audit-policy-file={root / 'audit-policy.yaml'}",
            f"--audit-log-path={self.state.audit_log}",
            "--audit-log-format=json",
            # Rotated (renamed audit-<time>.log) past this many MB; the default, 100, is
            # reached by a long chaos run, and the e2e `audit` fixture reads audit.log only.
            "--audit-log-maxsize=1024",
            "--profiling=false",
        ]
        kept = [arg for arg in sandbox if arg.split("=", 1)[0].removeprefix("--") not in flags]
        return kept + [f"--{name}={value}" for name, value in flags.items()]

    def _client_flags(self, component: str) -> list[str]:
        return [
            f"--kubeconfig={self.state.component_kubeconfig(component)}",
            "--leader-elect=false",
            "--port=0",
            "--secure-port=0",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        ]

    def _controller_manager(self) -> list[str]:
        return [
            str(self.binaries / "kube-controller-manager"),
            *self._client_flags("kube-controller-manager"),
            # Each controller acts as its own ServiceAccount, as in kubeadm clusters.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.state.root / 'sa.key'}",
            f"--root-ca-file={self.serving_cert}",
            "--controllers=*,-nodeipam",
            # Taints follow the Ready condition within 2 s (default 5 s).
            "--node-monitor-period=2s",
        ]

    def _scheduler(self) -> list[str]:
        return [str(self.binaries / "kube-scheduler"), *self._client_flags("kube-scheduler")]


@dataclass(frozen=True)
class ControlPlane:
    """A running control plane in a state dir (started here or by another process)."""

    state: SandboxState
    server: str
    version: str  # the API server's gitVersion, e.g. v1.20.2

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (token user in group system:masters)."""
        return self.state.kubeconfig

    @classmethod
    def start(
        cls,
        state_dir: Path,
        *,
        apiserver_port: int | None = None,
        timeout: float = 120.0,
        options: Options | None = None,
    ) -> ControlPlane:
        """Start a fresh control plane in state_dir, cleaning a stale one left by a crashed
        run; refuses if a live one is there. Returns once the API server is ready and the
        controller-manager is at work."""
        state = SandboxState(state_dir.resolve())
        _clear_previous(state)
        if apiserver_port is not None:
            check_port_free(apiserver_port)
        binaries = ensure_binaries(state.log_file("build"))
        etcd = require_tool("etcd", "etcd-server")
        openssl = require_tool("openssl", "openssl")
        ports = _Ports(free_port(), free_port(), apiserver_port or free_port())
        options = options or Options()
        launcher = _Launcher(state, binaries, etcd, ports, options)
        users = {**_USERS, **options.users}
        tokens = {name: secrets.token_hex(16) for name in users}
        admin = tokens["admin"]
        try:
            _write_static_files(state, openssl, tokens, users)
            for name in ("etcd", "kube-apiserver"):
                _spawn(state, name, launcher.argv(name))
            _wait_apiserver(state, launcher.server, admin, time.monotonic() + timeout)
            _write_kubeconfigs(state, launcher, tokens, users)
            for name in ("kube-controller-manager", "kube-scheduler"):
                _spawn(state, name, launcher.argv(name))
            _wait_controller_manager(state, launcher.server, admin, time.monotonic() + timeout)
        except BaseException:
            down(state)
            raise
        return cls._from_info(state, _write_info(state, launcher, etcd))

    @classmethod
    def attach(cls, state_dir: Path) -> ControlPlane:
        """The control plane already running in state_dir (one-line error if there is none)."""
        state = SandboxState(state_dir.resolve())
        state.require()
        info = read_json(state.info) or {}
        if procs.running_pid(state.pid_file("kube-apiserver")) is None:
            raise SandboxError(
                f"the sandbox in {state.root} is not running "
                f"(stale; run: kured-sandbox up --state-dir {state.root})"
            )
        return cls._from_info(state, info)

    @classmethod
    def _from_info(cls, state: SandboxState, info: dict[str, Any]) -> ControlPlane:
        try:
            return cls(state, str(info["server"]), str(info["kubernetes_version"]))
        except KeyError:
            raise SandboxError(f"{state.info} is damaged (run: kured-sandbox up)") from None

    def client(self, kubeconfig: Path | None = None) -> AsyncClient:
        """A lightkube AsyncClient, as the admin unless another kubeconfig is given (proxy
        variables ignored: the API server is on loopback)."""
        config = KubeConfig.from_file(kubeconfig or self.kubeconfig)
        return AsyncClient(config, field_manager="kured-sandbox", trust_env=False)

    def rss(self) -> dict[str, int]:
        """Resident memory (bytes) of each running control plane process."""
        sizes: dict[str, int] = {}
        for name in COMPONENTS:
            pid = procs.running_pid(self.state.pid_file(name))
            if pid is not None and (size := procs.rss_bytes(pid)) is not None:
                sizes[name] = size
        return sizes

    def stop(self) -> None:
        """Stop everything the sandbox started in this state dir (as `kured-sandbox down`)."""
        down(self.state)

    def restart(self, component: str, timeout: float = 120.0) -> None:
        """Crash one component (SIGKILL) and start it again with the same command line, as a
        kubelet restarts a static pod; returns once the API server answers /readyz again."""
        if component not in COMPONENTS:
            raise SandboxError(f"unknown component {component!r} (one of {', '.join(COMPONENTS)})")
        pid_file = self.state.pid_file(component)
        pid = procs.running_pid(pid_file)
        if pid is None:
            raise SandboxError(f"{component} is not running in {self.state.root}")
        argv = procs.cmdline(pid)
        procs.kill_and_wait(pid)
        _spawn(self.state, component, argv)
        _wait_apiserver(
            self.state, self.server, _admin_token(self.state), time.monotonic() + timeout
        )


def _clear_previous(state: SandboxState) -> None:
    """Refuse a live sandbox; stop and remove the remains of a dead one."""
    if procs.running_pid(state.pid_file("kube-apiserver")) is not None:
        raise SandboxError(
            f"a sandbox is already running in {state.root} "
            f"(run: kured-sandbox down --state-dir {state.root})"
        )
    if any((state.root / entry).exists() for entry in SandboxState.ENTRIES):
        log.info("cleaning stale sandbox state in %s", state.root)
        down(state)
        state.wipe()
    state.root.mkdir(parents=True, exist_ok=True)


def _write_static_files(
    state: SandboxState, openssl: str, tokens: dict[str, str], users: _UserTable
) -> None:
    lines = [f'{tokens[name]},{user},{user},"{groups}"\n' for name, (user, groups) in users.items()]
    atomic_write(state.root / "tokens.csv", "".join(lines))
    atomic_write(state.root / "audit-policy.yaml", yaml.safe_dump(_AUDIT_POLICY))
    result = subprocess.run(
        [openssl, "genrsa", "-out", str(state.root / "sa.key"), "2048"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SandboxError(f"openssl genrsa failed: {result.stderr.strip()[:300]}")


def _write_kubeconfigs(
    state: SandboxState, launcher: _Launcher, tokens: dict[str, str], users: _UserTable
) -> None:
    """The admin's and each component's kubeconfig, trusting the API server's own cert."""
    ca_pem = launcher.serving_cert.read_bytes()
    for name, (user, _) in users.items():
        path = state.kubeconfig if name == "admin" else state.component_kubeconfig(name)
        atomic_write(path, kubeconfig_text(launcher.server, ca_pem, tokens[name], user))


def _admin_token(state: SandboxState) -> str:
    config = yaml.safe_load(state.kubeconfig.read_text())
    return str(config["users"][0]["user"]["token"])


def _spawn(state: SandboxState, name: str, argv: list[str]) -> None:
    procs.spawn(argv, log=state.log_file(name), pid_file=state.pid_file(name))


def _check_alive(state: SandboxState, names: tuple[str, ...]) -> None:
    for name in names:
        if procs.running_pid(state.pid_file(name)) is None:
            raise SandboxError(f"{name} exited: {_last_line(state.log_file(name))}")


def _wait_ok(
    state: SandboxState,
    request: urllib.request.Request,
    context: ssl.SSLContext,
    watched: tuple[str, ...],
    deadline: float,
) -> bool:
    """Poll request until it answers 200 (True) or the deadline passes (False); fail at once
    if one of the watched components exits."""
    while time.monotonic() < deadline:
        _check_alive(state, watched)
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(request, timeout=2, context=context) as response,
        ):
            if response.status == 200:
                return True
        time.sleep(0.2)
    return False


def _wait_apiserver(state: SandboxState, server: str, token: str, deadline: float) -> None:
    """/readyz answers ok about 10 s after the start. The serving cert does not exist before
    the API server writes it, so this probe alone skips verification."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        f"{server}/readyz", headers={"Authorization": f"Bearer {token}"}
    )
    if not _wait_ok(state, request, context, ("etcd", "kube-apiserver"), deadline):
        last = _last_line(state.log_file("kube-apiserver"))
        raise SandboxError(f"kube-apiserver not ready in time: {last}")


def _wait_controller_manager(state: SandboxState, server: str, token: str, deadline: float) -> None:
    """The controller-manager is at work once its service-account controller has made the
    default namespace's ServiceAccount."""
    request = urllib.request.Request(
        f"{server}/api/v1/namespaces/default/serviceaccounts/default",
        headers={"Authorization": f"Bearer {token}"},
    )
    context = ssl.create_default_context(cafile=str(state.root / "certs" / "apiserver.crt"))
    if not _wait_ok(state, request, context, COMPONENTS, deadline):
        last = _last_line(state.log_file("kube-controller-manager"))
        raise SandboxError(f"kube-controller-manager made no progress: {last}")


def _version(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    output = (result.stdout or result.stderr).strip()
    return output.splitlines()[0] if output else "unknown"


def _write_info(state: SandboxState, launcher: _Launcher, etcd: str) -> dict[str, Any]:
    """sandbox.json: marks the state dir as a sandbox and records what runs there."""
    info = {
        "server": launcher.server,
        "kubernetes": launcher.binaries.name.removeprefix("bin-"),
        "kubernetes_version": _version(
            [str(launcher.binaries / "kube-apiserver"), "--version"]
        ).split()[-1],
        "binaries": str(launcher.binaries),
        "etcd": _version([etcd, "--version"]),
        "kured": kured.__version__,
        "started": time.time(),
    }
    atomic_write(state.info, json.dumps(info, indent=2) + "\n")
    return info


def _pid_files(state: SandboxState) -> Iterator[list[Path]]:
    """Pid files in stopping order: supervisors (they stop their own daemons), then whatever a
    killed supervisor left, then the control plane from the top down."""
    yield sorted(state.pids.glob("supervisor-*.pid")) if state.pids.is_dir() else []
    yield [path for node in state.node_dirs() for path in (node.kured_pid, node.init_pid)]
    for name in reversed(COMPONENTS):
        yield [state.pid_file(name)]


def down(state: SandboxState) -> None:
    """Stop every process the sandbox started in this state dir, by pid (idempotent)."""
    for batch in _pid_files(state):
        procs.stop_pid_files(batch)
