"""What makes a QEMU guest one particular node of the lab: its config disk (credentials, the
kubelet's serving certificate, the pod subnet), its QEMU command line (TCG, user-mode
networking only, the sockets issue 15's faults use) and the control plane's extra options."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tomllib
from pathlib import Path

import yaml

from kured_testbed.controlplane import Options, _Launcher, _Ports
from kured_testbed.lab import cache, cluster, guestconfig, guests
from kured_testbed.lab.images import PAUSE_IMAGE
from kured_testbed.lab.rootfs import ENABLED_UNITS, GUEST_FILES, GuestDisk
from kured_testbed.state import SandboxState

NODE = guestconfig.NodeIdentity("lab-2", 2, "kubelet-token", "proxy-token", "fleet=lab")


def _config_files() -> dict[str, bytes]:
    data = guestconfig.config_tar(NODE, 34567, b"CA PEM", PAUSE_IMAGE)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {
            member.name: archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
        }


def test_config_disk_names_the_api_server_as_the_guest_reaches_it() -> None:
    files = _config_files()
    kubelet = yaml.safe_load(files["kubelet.kubeconfig"])
    cluster_entry = kubelet["clusters"][0]["cluster"]
    assert cluster_entry["server"] == "https://10.0.2.2:34567"
    assert cluster_entry["tls-server-name"] == "kubernetes"
    assert kubelet["users"][0] == {"name": "system:node:lab-2", "user": {"token": "kubelet-token"}}
    proxy = yaml.safe_load(files["kube-proxy.kubeconfig"])
    assert proxy["users"][0]["user"]["token"] == "proxy-token"
    env = files["env"].decode()
    assert 'NODE_NAME="lab-2"' in env
    assert 'NODE_LABELS="fleet=lab"' in env


def test_config_disk_gives_each_node_its_own_pod_subnet_and_the_lab_pause_image() -> None:
    files = _config_files()
    bridge = json.loads(files["cni.conflist"])["plugins"][0]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.2.0/24"}]]
    assert f'sandbox_image = "{PAUSE_IMAGE}"' in files["containerd.toml"].decode()
    proxy = yaml.safe_load(files["kube-proxy.yaml"])
    assert proxy["hostnameOverride"] == "lab-2"
    assert proxy["mode"] == "iptables"


def test_node_agents_skip_the_idle_work_the_lab_has_no_use_for() -> None:
    """Profiled costs of an idle TCG guest (docs/lab.md); the kubelet refuses node-allocatable
    enforcement without pod-level cgroups, so the two go together."""
    files = _config_files()
    kubelet = yaml.safe_load(files["kubelet.yaml"])
    assert kubelet["cgroupsPerQOS"] is False and kubelet["enforceNodeAllocatable"] == []
    assert kubelet["evictionHard"] == {}
    assert kubelet["featureGates"] == {"LocalStorageCapacityIsolation": False}
    containerd = tomllib.loads(files["containerd.toml"].decode())
    disabled = containerd["disabled_plugins"]
    assert "io.containerd.snapshotter.v1.aufs" in disabled
    assert "io.containerd.snapshotter.v1.overlayfs" not in disabled  # the one pods use


def test_pod_range_is_masqueraded_once_at_boot_not_by_every_cni_call() -> None:
    unit = "kured-lab-masquerade.service"
    assert unit in ENABLED_UNITS
    text = (GUEST_FILES / "etc/systemd/system" / unit).read_text()
    rule = f"-s {guestconfig.CLUSTER_CIDR} ! -d {guestconfig.CLUSTER_CIDR} -j MASQUERADE"
    assert f"ExecStart=/usr/sbin/iptables -t nat -A POSTROUTING {rule}" in text
    assert "Before=kubelet.service" in text


def test_kubelet_serving_certificate_is_made_by_the_lab_for_the_node(tmp_path: Path) -> None:
    files = _config_files()
    (tmp_path / "tls.crt").write_bytes(files["kubelet.crt"])
    text = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "tls.crt"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:lab-2" in text
    assert "IP Address:10.0.2.15" in text
    assert b"PRIVATE KEY" in files["kubelet.key"]
    assert yaml.safe_load(files["kubelet.yaml"])["tlsCertFile"].startswith("/run/kured-lab/")


def test_qemu_command_line(tmp_path: Path) -> None:
    guest = guests.GuestDir(tmp_path / "lab-1")
    disk = GuestDisk(tmp_path / "root.img", tmp_path / "vmlinuz", tmp_path / "initrd.img")
    argv = guests.qemu_argv(guest, disk, "tcg")
    joined = " ".join(argv)
    assert "-accel tcg,thread=multi" in joined
    assert argv[argv.index("-m") + 1] == "1024"
    assert "user,id=net0" in joined and "hostfwd" not in joined and "tap" not in joined
    assert f"unix:{guest.qmp_socket},server=on,wait=off" in argv
    assert f"socket,id=agent,path={guest.agent_socket},server=on,wait=off" in argv
    append = argv[argv.index("-append") + 1]
    assert "systemd.unified_cgroup_hierarchy=0" in append
    assert "systemd.hostname=lab-1" in append
    kvm = guests.qemu_argv(guest, disk, "kvm")
    assert kvm[kvm.index("-accel") + 1] == "kvm"


def test_control_plane_options_replace_flags_and_add_node_users(tmp_path: Path) -> None:
    options = cluster.control_plane_options(cluster.lab_fleet(2))
    assert options.users["kubelet-lab-1"] == ("system:node:lab-1", "system:nodes")
    assert options.users["kube-proxy"] == ("system:kube-proxy", "")
    launcher = _Launcher(SandboxState(tmp_path), tmp_path, "etcd", _Ports(1, 2, 3), options)
    modes = [arg for arg in launcher.argv("kube-apiserver") if "authorization-mode" in arg]
    assert modes == ["--authorization-mode=Node,RBAC"]
    plain = _Launcher(SandboxState(tmp_path), tmp_path, "etcd", _Ports(1, 2, 3), Options())
    assert "--authorization-mode=RBAC" in plain.argv("kube-apiserver")


def test_cache_keys_follow_every_input(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("one")
    before = cache.digest(cache.tree_parts(tmp_path))
    assert before == cache.digest(cache.tree_parts(tmp_path))
    (tmp_path / "a").write_text("two")
    assert cache.digest(cache.tree_parts(tmp_path)) != before
    assert cache.digest(["ab", "c"]) != cache.digest(["a", "bc"])
