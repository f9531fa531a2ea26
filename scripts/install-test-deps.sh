#!/usr/bin/env bash
# Install what Hecate's test suite needs on a fresh Debian 12/13 machine, then set up the sshd
# test nodes (tests/peers/ssh/setup.sh). Root. Idempotent: when every package is already there it
# does not touch apt at all.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "$0: needs root (apt-get install, useradd, /etc/sudoers.d)" >&2; exit 1; }

# upsd + dummy-ups + upsrw, sshd + ssh + ssh-keygen, sudo, ipmi_sim + ipmitool (IPMI BMC and
# Hecate's IPMI client), python3-venv (sushy-emulator, the Redfish BMC), openssl (its test
# certificates), and what the scripts and shims call
PACKAGES=(nut-server nut-client openssh-server openssh-client sudo openipmi ipmitool python3-venv openssl
  iproute2 python3 procps passwd coreutils)
# systemd-analyze (verifies the units) and git (the self-update test): hecate/tests/install.rs
PACKAGES+=(systemd git)
# certutil + pk12util: Debian's upsd is built with NSS and takes its TLS certificate from an NSS
# database (test-support/src/nut.rs, backends/tests/nut_tls.rs)
PACKAGES+=(libnss3-tools)
# The Kubernetes API peer (test-support/src/kube.rs, tests/peers/k8s/): etcd, curl for its
# readiness check, setpriv (util-linux) to stop it with the test process. The API server itself is
# built from source below.
PACKAGES+=(etcd-server curl util-linux)
# faketime (libfaketime): a forwarder daemon whose clock is off, for the signed-forwarding window
# (hecate/tests/forwarding.rs)
PACKAGES+=(faketime)
# The Debian package (scripts/build-deb, hecate/tests/deb_package.rs): dpkg-shlibdeps (dpkg-dev),
# strip (binutils), lintian to check it, init-system-helpers (deb-systemd-helper) for its scripts
PACKAGES+=(dpkg-dev binutils lintian init-system-helpers)
# A real SMTP server for the email notifier (aiosmtpd, run by Debian's /usr/bin/python3:
# test-support/src/smtp.rs)
PACKAGES+=(python3-aiosmtpd)

missing=()
for p in "${PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  # Never let package scripts start daemons (openssh-server would start sshd on port 22 of every
  # address, nut-server an upsd on 3493). If there is no policy-rc.d, put one in for the install
  # and take it away again afterwards.
  POLICY=/usr/sbin/policy-rc.d
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, from hecate scripts/install-test-deps.sh\nexit 101\n' > "$POLICY"
    chmod 0755 "$POLICY"
    trap 'rm -f "$POLICY"' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
  # the downloaded .debs are not needed once installed, and a small CI disk wants the room
  apt-get clean
fi

# upsmon (nut-client) is another client of the test upsd (test-support's Upsmon), run in its own
# mount namespace with unshare (util-linux)
for bin in /lib/nut/upsd /lib/nut/dummy-ups /lib/nut/upsmon /usr/bin/unshare /usr/sbin/sshd /usr/bin/ipmi_sim \
  /usr/bin/ipmitool /usr/bin/openssl; do
  [ -x "$bin" ] || { echo "$0: $bin missing after install" >&2; exit 1; }
done
getent passwd nut >/dev/null || { echo "$0: user 'nut' missing after installing nut-server" >&2; exit 1; }

"$ROOT/tests/peers/ssh/setup.sh"

# sushy-emulator (sushy-tools 2.2.0 from PyPI) in a venv outside the clone, so CI runs on the same
# machine reuse it. Exactly the versions in the lock (--no-deps; `pip check` proves the lock is
# complete). A stamp with the lock's hash marks a finished install: a changed lock or an
# interrupted install builds the venv again. Debian's python3, which python3-venv belongs to.
REDFISH_VENV=/var/lib/hecate-test/redfish-venv
REDFISH_LOCK="$ROOT/tests/peers/redfish/requirements.lock"
lock_hash=$(sha256sum <"$REDFISH_LOCK" | cut -d' ' -f1)
if [ "$(cat "$REDFISH_VENV/.hecate-lock.sha256" 2>/dev/null)" != "$lock_hash" ] \
  || ! "$REDFISH_VENV/bin/python" -c 'import sushy_tools.emulator.main' 2>/dev/null; then
  echo "creating the sushy-emulator venv in $REDFISH_VENV"
  rm -rf "$REDFISH_VENV"
  mkdir -p "$(dirname "$REDFISH_VENV")"
  /usr/bin/python3 -m venv "$REDFISH_VENV"
  "$REDFISH_VENV/bin/pip" install -q --no-deps -r "$REDFISH_LOCK" </dev/null
  "$REDFISH_VENV/bin/pip" check
  "$REDFISH_VENV/bin/python" -c 'import sushy_tools.emulator.main'
  echo "$lock_hash" >"$REDFISH_VENV/.hecate-lock.sha256"
fi

# promtool, Prometheus's rule checker (hecate/tests/observability.rs: `promtool check rules` and
# `promtool test rules` on packaging/prometheus/). Only the binary, extracted from Debian's
# `prometheus` package into the cache outside the clone: installing the package would add a
# user and a Prometheus server unit listening on 9090, which no test wants.
PROMTOOL_DIR=/var/lib/hecate-test/promtool
if ! "$PROMTOOL_DIR/promtool" --version >/dev/null 2>&1; then
  echo "extracting promtool from Debian's prometheus package into $PROMTOOL_DIR"
  mkdir -p "$PROMTOOL_DIR"
  work=$(mktemp -d)
  # _apt downloads into a directory it can write
  chown _apt "$work" 2>/dev/null || true
  (cd "$work" && apt-get download -qq prometheus </dev/null) \
    || { apt-get update -qq </dev/null && (cd "$work" && apt-get download -qq prometheus </dev/null); }
  dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -x -O ./usr/bin/promtool >"$PROMTOOL_DIR/promtool.tmp"
  chmod 0755 "$PROMTOOL_DIR/promtool.tmp"
  mv "$PROMTOOL_DIR/promtool.tmp" "$PROMTOOL_DIR/promtool"
  rm -rf "$work"
  "$PROMTOOL_DIR/promtool" --version >/dev/null
fi

# kube-apiserver 1.20.2, built once from Debian's `kubernetes` source package (~6 min) and cached
# in /var/lib/hecate-test: later runs on the same machine find it and skip the build.
"$ROOT/tests/peers/k8s/build-apiserver.sh"
