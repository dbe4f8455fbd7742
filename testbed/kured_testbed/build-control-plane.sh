#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kube-scheduler (the sandbox's control
# plane) and kubelet and kube-proxy (the lab's real nodes) from Debian's `kubernetes` source
# package, once, in one `make` (they share most packages), into a per-user cache keyed by
# version. The pause container's source (build/pause/linux/pause.c) is kept beside them.
# Prints the directory holding the binaries on its last line.
# Debian ships no kube-apiserver binary; its source package builds offline (vendor/).
set -euo pipefail

cache_root="${KURED_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kured-sandbox}"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
log() { printf 'build-control-plane: %s\n' "$*" >&2; }

have_all() {
  for b in "${binaries[@]}"; do [ -x "$1/$b" ] || return 1; done
  [ -f "$1/pause.c" ]
}

# Fast path: any cached build is enough (the version is part of the directory name).
for d in "$cache_root"/bin-*; do
  if [ -d "$d" ] && have_all "$d"; then echo "$d"; exit 0; fi
done

[ "$(id -u)" = 0 ] || { log "needs root to apt-get install build dependencies (or a cache at $cache_root)"; exit 1; }
export DEBIAN_FRONTEND=noninteractive
src_list=/etc/apt/sources.list.d/kured-sandbox-src.sources
if [ ! -f "$src_list" ]; then
  # A deb-src twin of apt's bookworm main entry.
  cat > "$src_list" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
log "apt-get update"
apt-get update -qq >&2
log "installing etcd-server golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev"
apt-get install -y -qq --no-install-recommends etcd-server golang-go rsync dpkg-dev make \
  golang-github-modern-go-reflect2-dev >&2

work=$(mktemp -d "${TMPDIR:-/tmp}/kured-k8s-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
log "downloading the kubernetes source package"
apt-get source --download-only kubernetes >&2
orig=$(ls kubernetes_*.orig.tar.* | head -n1)
version=${orig#kubernetes_}; version=${version%.orig.tar.*}
mkdir src && tar -xf "$orig" -C src --strip-components=1
cd src
mkdir -p .go/src/k8s.io && ln -s ../../.. .go/src/k8s.io/kubernetes
# The vendored reflect2 1.0.1 iterates maps with a runtime struct that Go 1.18 made larger:
# built with bookworm's Go 1.19, kube-apiserver dies under load with "fatal error: fault" in
# reflect2.(*UnsafeMapType).UnsafeIterate (seen at 100 agents). Debian's 1.0.2, the upstream
# fix with the same API, replaces it.
reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
log "vendoring reflect2 $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
rsync -a --delete --exclude=go.mod "$reflect2/" vendor/github.com/modern-go/reflect2/
sed -i 's|^\(# github.com/modern-go/reflect2\) v1.0.1$|\1 v1.0.2|' vendor/modules.txt
sed -i 's|\(github.com/modern-go/reflect2\) v1.0.1|\1 v1.0.2|' go.mod
log "building ${binaries[*]} ($version); about 8 minutes on 2 cores"
GOPATH=$PWD/.go CGO_ENABLED=0 \
  make WHAT="${binaries[*]/#/cmd/}" >&2
out="$cache_root/bin-$version"
mkdir -p "$out.tmp"
for b in "${binaries[@]}"; do cp "_output/bin/$b" "$out.tmp/"; done
cp build/pause/linux/pause.c "$out.tmp/"
rm -rf "$out"; mv "$out.tmp" "$out"
log "cached in $out"
echo "$out"
