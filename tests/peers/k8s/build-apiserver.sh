#!/usr/bin/env bash
# Build a real kube-apiserver 1.20.2 from Debian 12's `kubernetes` source package (Debian's Go 1.19),
# for the cluster/GitOps tests. ~6 min and ~1.5 GB of scratch on 2 cores, so the binary is cached
# outside the clone: a second CI run on the same machine finds it and does nothing.
# usage: build-apiserver.sh [OUT]   (default /var/lib/hecate-test/kube-apiserver-1.20.2). Root.
set -euo pipefail
OUT=${1:-/var/lib/hecate-test/kube-apiserver-1.20.2}
if [ -x "$OUT" ] && "$OUT" --version 2>/dev/null | grep -q 'v1.20.2'; then
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "$0: needs root (apt-get)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
# Source packages come from the same mirrors as the machine's binary packages, as deb-src.
SRC_LIST=/etc/apt/sources.list.d/hecate-src.sources
if [ ! -f "$SRC_LIST" ]; then
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$SRC_LIST"
  else
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >/etc/apt/sources.list.d/hecate-src.list
  fi
fi
apt-get update -qq </dev/null
apt-get install -y -qq --no-install-recommends golang-go rsync make golang-github-modern-go-reflect2-dev \
  dpkg-dev </dev/null >/dev/null
apt-get clean

WORK=$(mktemp -d /var/tmp/hecate-kube-build.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
apt-get source --download-only kubernetes </dev/null >/dev/null
tar xzf kubernetes_*.orig.tar.gz
cd kubernetes-1.20.2
# The vendored reflect2 v1.0.1 segfaults under Go >= 1.18 (map iteration); Debian's v1.0.2 does not.
V=vendor/github.com/modern-go/reflect2
rm -rf "$V"
mkdir -p "$V"
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$V/"
# `go build -mod=vendor` fails on this tree; the Makefile in GOPATH mode works.
mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes
GOPATH=$PWD/.go CGO_ENABLED=0 HOME=$WORK/home GOCACHE=$WORK/gocache make WHAT=cmd/kube-apiserver >"$WORK/build.log" 2>&1 \
  || { tail -30 "$WORK/build.log" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
install -m 0755 _output/bin/kube-apiserver "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "built $OUT"
