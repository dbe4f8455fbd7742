"""The real-node lab: QEMU guests (Debian, systemd, containerd, kubelet, kube-proxy) joined to
the sandbox's control plane, with kured installed as users deploy it (`kured-lab`)."""
