#!/usr/bin/env bash
# One-time, idempotent setup for Hecate's sshd test nodes. Root. Run by scripts/install-test-deps.sh
# (and so by scripts/test); hecate-test-support checks that it was done and says so if not.
#
# Everything lives in a fixed place outside the clone, because the sudoers rule has to name the
# shims by absolute path and must not depend on where the repository is checked out:
#   /var/lib/hecate-test/ssh/keys/id_ed25519{,.pub}  client key (root-only private key)
#   /var/lib/hecate-test/ssh/keys/authorized_keys    the key above, for root and hecate
#   /var/lib/hecate-test/ssh/home                    home of the test user 'hecate'
#   /var/lib/hecate-test/ssh/shim/                   recording shims: systemctl shutdown poweroff reboot halt
#                                                    timedatectl hecate-k3s-stop
#   /var/lib/hecate-test/ssh/shim-root/sudo          fake sudo for root sessions
#   /etc/sudoers.d/hecate-test                       hecate may run exactly those shims via sudo -n
#   /etc/sudoers.d/hecate-test-pkg                   hecate-pkg may run what the shipped rule
#                                                    (packaging/sudoers.d/hecate-node) allows, on the shims
# The directory is named by SSH_SETUP_DIR in test-support/src/ssh.rs: keep both in step.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
DIR=/var/lib/hecate-test/ssh
SUDOERS=/etc/sudoers.d/hecate-test
PKG_USER=hecate-pkg
PKG_SUDOERS=/etc/sudoers.d/hecate-test-pkg
SHIMS=(systemctl shutdown poweroff reboot halt timedatectl hecate-k3s-stop)

[ "$(id -u)" = 0 ] || { echo "$0: needs root (creates user 'hecate' and $SUDOERS)" >&2; exit 1; }
for tool in ssh-keygen useradd usermod visudo; do
  command -v "$tool" >/dev/null || { echo "$0: $tool missing: run scripts/install-test-deps.sh" >&2; exit 1; }
done

install -d -m 0755 /var/lib/hecate-test "$DIR" "$DIR/keys" "$DIR/shim" "$DIR/shim-root"
install -d -m 0755 /run/sshd   # sshd's privilege separation dir; sshd refuses to start without it

[ -f "$DIR/keys/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C hecate-test -f "$DIR/keys/id_ed25519"
chmod 0600 "$DIR/keys/id_ed25519"
# sshd reads authorized_keys as the logging-in user: it must be world-readable
install -m 0644 "$DIR/keys/id_ed25519.pub" "$DIR/keys/authorized_keys"

if getent passwd hecate >/dev/null; then
  home=$(getent passwd hecate | cut -d: -f6)
  if [ "$home" != "$DIR/home" ]; then
    echo "$0: a user 'hecate' exists with home $home, not $DIR/home: it was not made by this script; refusing to change it" >&2
    exit 1
  fi
else
  useradd -M -U -d "$DIR/home" -s /bin/bash -c "Hecate test user" hecate
fi
# A second user whose only rule is the one Hecate ships for real nodes, its command paths
# replaced by the shims': the preflight tests check the plans' commands against exactly that rule.
if getent passwd "$PKG_USER" >/dev/null; then
  home=$(getent passwd "$PKG_USER" | cut -d: -f6)
  if [ "$home" != "$DIR/home" ]; then
    echo "$0: a user '$PKG_USER' exists with home $home, not $DIR/home: it was not made by this script; refusing to change it" >&2
    exit 1
  fi
else
  useradd -M -U -d "$DIR/home" -s /bin/bash -c "Hecate test user (shipped sudoers rule)" "$PKG_USER"
fi
# a locked ('!') account cannot log in even with a key when sshd runs with UsePAM no
usermod -p '*' hecate
usermod -p '*' "$PKG_USER"
install -d -o hecate -g hecate -m 0755 "$DIR/home"

# named hecate-shim since the hooks came: an older checkout on the same machine still finds its
# own _shim unchanged (its check compares that file), while every command runs this one
install -m 0755 "$HERE/shim.sh" "$DIR/shim/hecate-shim"
for c in "${SHIMS[@]}"; do ln -sfn hecate-shim "$DIR/shim/$c"; done
install -m 0755 "$HERE/sudo-root.sh" "$DIR/shim-root/sudo"

allowed=$(printf "$DIR/shim/%s, " "${SHIMS[@]}"); allowed=${allowed%, }
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
cat > "$tmp" <<EOS
# Hecate tests (tests/peers/ssh/setup.sh): the test user may run only the recording shims.
Defaults:hecate secure_path="$DIR/shim:/usr/sbin:/usr/bin:/sbin:/bin"
Defaults:hecate env_keep += "HECATE_NODE HECATE_NODE_DIR"
Defaults:hecate !use_pty
hecate ALL=(root) NOPASSWD: $allowed
EOS
# check before it lands: a broken file in sudoers.d breaks sudo for everyone
visudo -cq -f "$tmp"
install -m 0440 -o root -g root "$tmp" "$SUDOERS"

# The shipped rule for $PKG_USER: its user, its alias names (aliases are global to sudo: a node's
# own hecate-node must not clash) and its command paths changed, nothing else.
{
  echo "# Hecate tests (tests/peers/ssh/setup.sh): packaging/sudoers.d/hecate-node for $PKG_USER, on the shims."
  echo "Defaults:$PKG_USER secure_path=\"$DIR/shim:/usr/sbin:/usr/bin:/sbin:/bin\""
  echo "Defaults:$PKG_USER env_keep += \"HECATE_NODE HECATE_NODE_DIR\""
  echo "Defaults:$PKG_USER !use_pty"
  sed -e '/^#/d' \
      -e "s|/usr/bin/systemctl|$DIR/shim/systemctl|g" \
      -e "s|/usr/local/sbin/hecate-k3s-stop|$DIR/shim/hecate-k3s-stop|g" \
      -e "s|HECATE_|HECATE_TEST_PKG_|g" \
      -e "s|^Defaults:hecate |Defaults:$PKG_USER |" \
      -e "s|^hecate ALL|$PKG_USER ALL|" \
      "$ROOT/packaging/sudoers.d/hecate-node"
} > "$tmp"
grep -q "^$PKG_USER ALL" "$tmp" || { echo "$0: packaging/sudoers.d/hecate-node has no 'hecate ALL' line to adapt" >&2; exit 1; }
visudo -cq -f "$tmp"
install -m 0440 -o root -g root "$tmp" "$PKG_SUDOERS"
visudo -cq

date -u +%Y-%m-%dT%H:%M:%SZ > "$DIR/setup-done"
echo "ssh test setup done in $DIR"
