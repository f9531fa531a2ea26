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
# The directory is named by SSH_SETUP_DIR in test-support/src/ssh.rs: keep both in step.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=/var/lib/hecate-test/ssh
SUDOERS=/etc/sudoers.d/hecate-test
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
# a locked ('!') account cannot log in even with a key when sshd runs with UsePAM no
usermod -p '*' hecate
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
visudo -cq

date -u +%Y-%m-%dT%H:%M:%SZ > "$DIR/setup-done"
echo "ssh test setup done in $DIR"
