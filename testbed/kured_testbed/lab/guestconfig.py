"""What makes one guest a particular node: its name, credentials, kubelet serving certificate,
pod subnet and the kubelet/kube-proxy/containerd configuration, packed into a tar that the
guest reads from its second disk at every boot (kured-lab-config.service unpacks it to tmpfs).

The guest reaches the host's loopback, where the API server listens, as the slirp gateway
10.0.2.2. The API server's self-signed certificate does not name that address, so the
guest's kubeconfigs verify it as `kubernetes`, a name it does carry.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kured_testbed.controlplane import kubeconfig_text, require_tool
from kured_testbed.state import SandboxError

HOST_FROM_GUEST = "10.0.2.2"  # QEMU user-mode networking's gateway = the host's 127.0.0.1
NODE_IP = "10.0.2.15"  # every slirp guest's own address
CLUSTER_CIDR = "10.244.0.0/16"
API_SERVER_NAME = "kubernetes"  # in the API server's self-signed certificate
# Idle costs of a TCG guest, measured (docs/lab.md): cAdvisor housekeeping (default 10 s),
# kube-proxy's periodic full iptables resync (default 30 s), and log lines through journald.
HOUSEKEEPING_INTERVAL = "1m"
# No DNS server in the lab: a nameserver nobody answers keeps the kubelet from logging and
# posting a MissingClusterDNS event at every sync of every pod (kured uses the Service IP).
CLUSTER_DNS = "10.0.0.10"
UNUSED_CONTAINERD_PLUGINS = tuple(
    f"io.containerd.snapshotter.v1.{name}" for name in ("aufs", "btrfs", "devmapper", "zfs")
)


@dataclass(frozen=True)
class NodeIdentity:
    """One guest as the control plane knows it."""

    name: str
    index: int  # 1-based; the pod subnet is 10.244.<index>.0/24
    kubelet_token: str
    proxy_token: str
    labels: str  # kubelet --node-labels


def pod_subnet(index: int) -> str:
    return f"10.244.{index}.0/24"


def guest_kubeconfig(port: int, ca_pem: bytes, token: str, user: str) -> str:
    """A kubeconfig naming the API server as the guest reaches it."""
    config = yaml.safe_load(
        kubeconfig_text(f"https://{HOST_FROM_GUEST}:{port}", ca_pem, token, user)
    )
    config["clusters"][0]["cluster"]["tls-server-name"] = API_SERVER_NAME
    return yaml.safe_dump(config, sort_keys=False)


def kubelet_config() -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "tlsCertFile": "/run/kured-lab/kubelet.crt",
        "tlsPrivateKeyFile": "/run/kured-lab/kubelet.key",
        "failSwapOn": False,
        "resolvConf": "/etc/resolv.conf",
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": "cluster.local",
        # No image GC or eviction in a lab that lives for minutes: no eviction thresholds,
        # and without local-storage isolation the eviction manager skips its 10 s stats
        # sweep (about 10 % of an idle kubelet's CPU, profiled: docs/lab.md).
        "evictionHard": {},
        "featureGates": {"LocalStorageCapacityIsolation": False},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # No pod-level cgroups: the kubelet's 2 s housekeeping otherwise lists and lstats
        # every pod cgroup of every v1 controller, 41 % of an idle kubelet's CPU (profiled);
        # containers still get their own cgroups from the runtime.
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        # Everything is slower under TCG: more time for the runtime, fewer idle wake-ups.
        "runtimeRequestTimeout": "10m",
        "syncFrequency": "1m",
        "fileCheckFrequency": "1m",
    }


def kube_proxy_config(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": "/run/kured-lab/kube-proxy.kubeconfig"},
        "hostnameOverride": name,
        "mode": "iptables",
        "clusterCIDR": CLUSTER_CIDR,
        # The guest's conntrack table is the kernel's default; kube-proxy leaves it alone.
        "conntrack": {"maxPerCore": 0},
        "iptables": {"syncPeriod": "5m", "minSyncPeriod": "1s"},
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
    }


def cni_config(index: int) -> dict[str, Any]:
    """A bridge with this node's own pod subnet. No ipMasq: kured-lab-masquerade.service
    masquerades the whole pod range once at boot, so no pod start or stop runs iptables."""
    return {
        "cniVersion": "0.4.0",
        "name": "kured-lab",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_subnet(index)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
        ],
    }


def containerd_config(pause_image: str) -> str:
    # Snapshotters the lab has no use for: at a guest's boot they cost containerd about 4 s
    # (aufs alone 2.4 s, a failed modprobe).
    return f"""version = 2
disabled_plugins = [{", ".join(f'"{plugin}"' for plugin in UNUSED_CONTAINERD_PLUGINS)}]

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
"""


def serving_certificate(name: str) -> tuple[bytes, bytes]:
    """A self-signed kubelet serving certificate (cert, key) made by the lab, so the kubelet
    never writes one itself (a hard reset tore the one it wrote: "failed to find any PEM
    data")."""
    openssl = require_tool("openssl", "openssl")
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        result = subprocess.run(
            [
                *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365"),
                *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}"),
                *("-addext", f"subjectAltName=DNS:{name},IP:{NODE_IP}"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SandboxError(f"openssl req failed: {result.stderr.strip()[:300]}")
        return cert.read_bytes(), key.read_bytes()


def config_tar(
    node: NodeIdentity,
    port: int,
    ca_pem: bytes,
    pause_image: str,
) -> bytes:
    """The guest's config disk: a tar of the files under /run/kured-lab."""
    cert, key = serving_certificate(node.name)
    env = {
        "NODE_NAME": node.name,
        "NODE_IP": NODE_IP,
        "HOUSEKEEPING_INTERVAL": HOUSEKEEPING_INTERVAL,
        "NODE_LABELS": node.labels,
    }
    files: dict[str, bytes | str] = {
        "env": env_file(env),
        "kubelet.kubeconfig": guest_kubeconfig(
            port, ca_pem, node.kubelet_token, f"system:node:{node.name}"
        ),
        "kube-proxy.kubeconfig": guest_kubeconfig(
            port, ca_pem, node.proxy_token, "system:kube-proxy"
        ),
        "kubelet.yaml": yaml.safe_dump(kubelet_config()),
        "kube-proxy.yaml": yaml.safe_dump(kube_proxy_config(node.name)),
        "cni.conflist": json.dumps(cni_config(node.index), indent=2),
        "containerd.toml": containerd_config(pause_image),
        "kubelet.crt": cert,
        "kubelet.key": key,
    }
    return tar_of(files)


def env_file(variables: dict[str, str]) -> str:
    """A systemd EnvironmentFile."""
    return "".join(f'{name}="{value}"\n' for name, value in variables.items())


def tar_of(files: dict[str, bytes | str]) -> bytes:
    """A config disk: a tar of these files, unpacked to /run/kured-lab in the guest."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600 if name.endswith((".key", ".kubeconfig")) else 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
