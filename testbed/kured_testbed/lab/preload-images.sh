#!/usr/bin/env bash
# preload-images.sh ROOTFS IMAGE.tar...: load docker-archive images into the containerd store
# of a guest rootfs, with the guest's own containerd and ctr run in a chroot of it (a private
# mount namespace: /proc, /dev, /run and the archives mounted there, gone when it ends).
# What `ctr -n k8s.io images import` does in a running guest, at native speed: under TCG the
# same import of kured's image takes minutes per guest.
set -euo pipefail
root=$(realpath "$1")
shift
[ -x "$root/usr/bin/containerd" ] || { echo "no containerd in $root" >&2; exit 1; }

exec unshare --mount --propagation private --fork bash -euo pipefail -c '
root=$1; shift
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"
mkdir -p "$root/run/images"
i=0
for archive in "$@"; do
    i=$((i + 1))
    touch "$root/run/images/$i.tar"
    mount --bind -o ro "$archive" "$root/run/images/$i.tar"
done
cat > "$root/run/build-containerd.toml" <<TOML
version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]
TOML
chroot "$root" /usr/bin/containerd --config /run/build-containerd.toml \
    --address /run/containerd/containerd.sock >"$root/run/containerd.log" 2>&1 &
daemon=$!
trap "kill $daemon 2>/dev/null; wait $daemon 2>/dev/null || true" EXIT
for _ in $(seq 100); do
    [ -S "$root/run/containerd/containerd.sock" ] && break
    sleep 0.1
done
for n in $(seq "$i"); do
    chroot "$root" ctr -n k8s.io images import "/run/images/$n.tar"
done
chroot "$root" ctr -n k8s.io images ls -q
' preload "$root" "$@"
