#!/usr/bin/env bash
# Hecate self-update, run by hecate-update.service (installed as
# /usr/local/lib/hecate/self-update.sh by scripts/install.sh):
#
#   1. fast-forward the git checkout HECATE_SRC_DIR (default /usr/local/src/hecate) to
#      HECATE_UPDATE_BRANCH (default main) of HECATE_UPDATE_REMOTE (default origin);
#   2. cargo build --release --locked -p hecate;
#   3. check the NEW binary: `--version`, and `config check` on /etc/hecate/hecate.yaml;
#   4. if it differs from /usr/local/bin/hecate: keep the installed one as hecate.previous and
#      put the new one in place atomically (temp file + rename);
#   5. restart hecate.service if it runs an outdated binary, unless a startup or shutdown is in
#      progress (then the next run restarts it). A restart that fails puts the previous binary
#      back.
# Any failure before step 4 leaves the installed binary as it was; the script then exits 1, so
# the unit shows as failed.
#
#   self-update.sh [--root DIR]   with --root: install under DIR, never call systemctl (tests)
#
# Settings go in /etc/hecate/update.env (read by the unit), e.g. HECATE_SRC_DIR=/srv/hecate.
# The checkout must be on the branch, without local changes to tracked files; a branch that has
# diverged from the remote is not touched. To set one up:
#   git clone <url> /usr/local/src/hecate
set -euo pipefail
umask 022

ROOT=""
while (($#)); do
  case $1 in
    --root) (($# >= 2)) || { echo "self-update: --root needs a directory" >&2; exit 2; }; ROOT=$2; shift 2 ;;
    --root=*) ROOT=${1#--root=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "self-update: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [ -n "$ROOT" ]; then
  ROOT=$(cd "$ROOT" && pwd)
  [ "$ROOT" = / ] && ROOT=""
fi

SRC=${HECATE_SRC_DIR:-/usr/local/src/hecate}
REMOTE=${HECATE_UPDATE_REMOTE:-origin}
BRANCH=${HECATE_UPDATE_BRANCH:-main}
BIN=$ROOT/usr/local/bin/hecate
CONFIG=$ROOT/etc/hecate/hecate.yaml
RUN_LOCK=$ROOT/var/lib/hecate/run.lock

log() { printf 'self-update: %s\n' "$*"; }
fail() { printf 'self-update: %s; the installed binary is unchanged\n' "$*" >&2; exit 1; }

TMP=""
trap '[ -z "$TMP" ] || rm -f -- "$TMP"' EXIT

# ---------------------------------------------------------------------------------------------
# 1. source

[ -d "$SRC/.git" ] || fail "no git checkout at $SRC (set HECATE_SRC_DIR in /etc/hecate/update.env, or: git clone <url> $SRC)"
git() { command git -C "$SRC" "$@"; }
branch=$(git symbolic-ref --quiet --short HEAD) || fail "$SRC: HEAD is detached; check out $BRANCH"
[ "$branch" = "$BRANCH" ] || fail "$SRC is on branch $branch, not $BRANCH"
[ -z "$(git status --porcelain --untracked-files=no)" ] || fail "$SRC has local changes to tracked files"
old_rev=$(git rev-parse HEAD)
git fetch --quiet "$REMOTE" "$BRANCH" || fail "git fetch $REMOTE $BRANCH failed in $SRC"
git merge --ff-only --quiet FETCH_HEAD || fail "$SRC: $BRANCH has diverged from $REMOTE/$BRANCH; not touching it"
new_rev=$(git rev-parse HEAD)
if [ "$old_rev" = "$new_rev" ]; then
  log "source: $BRANCH already at ${new_rev:0:12}"
else
  log "source: $BRANCH ${old_rev:0:12} -> ${new_rev:0:12}"
fi

# ---------------------------------------------------------------------------------------------
# 2. build

if ! command -v cargo >/dev/null && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
  PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || fail "cargo not found (PATH=$PATH)"
(cd "$SRC" && cargo build --release --locked -p hecate) || fail "cargo build failed"
target_dir=${CARGO_TARGET_DIR:-$SRC/target}
case $target_dir in /*) ;; *) target_dir=$SRC/$target_dir ;; esac
NEW=$target_dir/release/hecate
[ -x "$NEW" ] || fail "the build left no executable $NEW"

# ---------------------------------------------------------------------------------------------
# 3. verify the new binary

version=$("$NEW" --version) || fail "$NEW --version failed"
[[ $version == hecate* ]] || fail "$NEW --version says '$version'"
[ -f "$CONFIG" ] || fail "no config at $CONFIG to check the new binary against"
if ! check=$("$NEW" config check "$CONFIG" 2>&1); then
  printf '%s\n' "$check" >&2
  fail "the new binary ($version) rejects $CONFIG"
fi
log "new binary: $version; $check"

# ---------------------------------------------------------------------------------------------
# 4. install

# put SRC DEST: copy to a temp file next to DEST, then rename over it
put() {
  TMP=$(mktemp "$(dirname -- "$2")/.$(basename -- "$2").XXXXXX")
  cp -- "$1" "$TMP"
  chmod 0755 -- "$TMP"
  mv -f -- "$TMP" "$2"
  TMP=""
}

changed=0
if [ -f "$BIN" ] && cmp -s -- "$NEW" "$BIN"; then
  log "unchanged $BIN"
else
  mkdir -p -- "$(dirname -- "$BIN")"
  if [ -f "$BIN" ]; then
    put "$BIN" "$BIN.previous"
    log "kept the old binary as $BIN.previous"
  fi
  put "$NEW" "$BIN"
  changed=1
  log "updated $BIN ($version)"
fi

# ---------------------------------------------------------------------------------------------
# 5. restart the daemon if it runs something else

if [ -n "$ROOT" ]; then
  log "--root: no restart"
  exit 0
fi
if ! [ -d /run/systemd/system ]; then
  log "systemd is not running: no restart"
  exit 0
fi
if ! systemctl --quiet is-active hecate.service; then
  log "hecate.service is not running: no restart"
  exit 0
fi
# after an update, the daemon's executable is the old, now unlinked, file
pid=$(systemctl show --property MainPID --value hecate.service)
stale=$changed
if [ -n "$pid" ] && [ "$pid" != 0 ] && [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == *" (deleted)" ]]; then
  stale=1
fi
if ! ((stale)); then
  log "hecate.service already runs this binary"
  exit 0
fi
if [ -e "$RUN_LOCK" ] && ! flock -n "$RUN_LOCK" true; then
  log "a startup or shutdown is running: hecate.service will be restarted by the next update run"
  exit 0
fi
if systemctl restart hecate.service; then
  log "restarted hecate.service"
  exit 0
fi
if ((changed)) && [ -f "$BIN.previous" ]; then
  put "$BIN.previous" "$BIN"
  systemctl restart hecate.service || true
  echo "self-update: hecate.service did not start with $version; the previous binary is back in place" >&2
  exit 1
fi
echo "self-update: hecate.service did not restart" >&2
exit 1
