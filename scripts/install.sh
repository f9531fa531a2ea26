#!/usr/bin/env bash
# Installs Hecate on this host, or into a directory (--root DIR) for tests and packaging.
# Idempotent: every file is compared before it is written, each is reported as "updated" or
# "unchanged", and a run that changes nothing says "nothing to change".
#
#   scripts/install.sh [--root DIR] [--binary PATH]
#   /usr/lib/hecate/install.sh --package [--root DIR]    (what the Debian package's postinst runs)
#
#   --binary PATH   the hecate binary to install (or HECATE_BINARY=PATH); without it, this
#                   checkout is built with `cargo build --release --locked -p hecate`
#   --root DIR      install under DIR instead of /: no packages, no systemctl, no udevadm;
#                   enablement is the symlinks in DIR/etc/systemd/system/*.wants/ (what
#                   `systemctl --root` manages)
#   --package       the host setup after the Debian package's files are in place: the directories,
#                   NUT (the same rules as below, only when the nut-server package is installed) and
#                   the config check with /usr/bin/hecate. The binary, config (a conffile), units and
#                   shared files are the package's; enabling and restarting hecate.service is the
#                   postinst's (deb-systemd-helper); no apt. Built by scripts/build-deb.
#
# What it installs (paths below the root):
#   /usr/local/bin/hecate                 atomically (temp file + rename); the one it replaces is
#                                         kept as /usr/local/bin/hecate.previous
#   /etc/hecate/ (0750), /var/lib/hecate/ (0750)
#   /etc/hecate/hecate.yaml               configs/hecate.example.yaml, ONLY if there is none: an
#                                         existing config is never touched
#   /etc/systemd/system/hecate.service, hecate-bootstrap.service, hecate-update.{service,timer}
#   /usr/local/lib/hecate/self-update.sh  what hecate-update.service runs
#   /usr/local/share/hecate/sudoers.d/hecate-node   the sudoers rule for the nodes (not active here)
#   /usr/local/share/hecate/node/hecate-k3s-stop    the nodes' graceful k3s stop (copy it to each node)
#   /etc/nut/{nut.conf,ups.conf,upsd.conf,upsd.users}, /etc/udev/rules.d/90-hecate-nut-ups.rules
#                                         when the NUT setup is Hecate's own (its "Managed by Hecate"
#                                         header) or configures no UPS yet, or HECATE_MANAGE_NUT=1;
#                                         a file it replaces that was not its own is kept as
#                                         FILE.hecate-backup-<time>. Another NUT setup is left alone,
#                                         and the lines to add for Hecate are printed.
#   /etc/hecate/nut.pass                  the password of Hecate's upsd user, unless HECATE_MANAGE_NUT=0
#
# Knobs (environment):
#   HECATE_ENABLE_BOOTSTRAP=1|0|auto  enable/disable hecate-bootstrap.service; auto (default) keeps
#                                     what is there (a first install leaves it disabled)
#   HECATE_ENABLE_UPDATE=1|0|auto     the same for hecate-update.timer
#   HECATE_MANAGE_NUT=auto|1|0        auto (default): write /etc/nut only if it is Hecate's own or
#                                     configures no UPS; 1: take an existing setup over (backups
#                                     kept); 0: leave /etc/nut, the udev rule and nut.pass alone
#   HECATE_NUT_UPS_NAME               default atlasups
#   HECATE_NUT_VENDOR_ID, HECATE_NUT_PRODUCT_ID   USB ids, default 0764 / 0601 (CyberPower)
#   HECATE_NUT_MONITOR_USER           default monuser
#   HECATE_NUT_MONITOR_PASSWORD       default: the one already in upsd.users (or nut.pass), else a
#                                     new random one. It is never printed.
#   HECATE_NUT_OFFDELAY, HECATE_NUT_ONDELAY   seconds, default 120 / 180: after the kill-power
#                                     command the UPS cuts its load OFFDELAY s later (long enough
#                                     for this host's own power-off), and brings it back ONDELAY s
#                                     after the command once mains are back. ONDELAY > OFFDELAY.
#   HECATE_NUT_LISTEN                 more addresses for upsd to listen on (port 3493), separated by
#                                     spaces, for other machines (a NAS) that keep using this upsd:
#                                     MODE=netserver. Unset: what the managed upsd.conf had; empty:
#                                     loopback only
#   HECATE_NUT_SECONDARIES_FILE       a file of "USER PASSWORD" lines (# comments): each becomes a
#                                     `upsmon secondary` user of upsd for those machines. Unset: the
#                                     ones the managed upsd.users had; empty: none
#   HECATE_SKIP_APT=1                 do not install missing Debian packages (never done under --root)
set -euo pipefail
umask 077

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=install.sh

die() { printf '%s: %s\n' "$PROG" "$*" >&2; exit 1; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# ---------------------------------------------------------------------------------------------
# arguments and knobs

ROOT=""
BINARY=${HECATE_BINARY:-}
PACKAGE=0
while (($#)); do
  case $1 in
    --root) (($# >= 2)) || die "--root needs a directory"; ROOT=$2; shift 2 ;;
    --root=*) ROOT=${1#--root=}; shift ;;
    --binary) (($# >= 2)) || die "--binary needs a path"; BINARY=$2; shift 2 ;;
    --binary=*) BINARY=${1#--binary=}; shift ;;
    --package) PACKAGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || die "--root $ROOT: no such directory"
  ROOT=$(cd "$ROOT" && pwd)
  [ "$ROOT" = / ] && ROOT=""
fi
REAL=1            # installing into the running system
[ -z "$ROOT" ] || REAL=0
if ((PACKAGE)); then
  [ -z "$BINARY" ] || die "--package installs no binary: the package has put /usr/bin/hecate in place"
  SKIP_APT_REASON="--package: the package's dependencies are dpkg's"
fi

ENABLE_BOOTSTRAP=${HECATE_ENABLE_BOOTSTRAP:-auto}
ENABLE_UPDATE=${HECATE_ENABLE_UPDATE:-auto}
MANAGE_NUT=${HECATE_MANAGE_NUT:-auto}
UPS_NAME=${HECATE_NUT_UPS_NAME:-atlasups}
VENDOR_ID=${HECATE_NUT_VENDOR_ID:-0764}
PRODUCT_ID=${HECATE_NUT_PRODUCT_ID:-0601}
MONITOR_USER=${HECATE_NUT_MONITOR_USER:-monuser}
SKIP_APT=${HECATE_SKIP_APT:-0}
OFFDELAY=${HECATE_NUT_OFFDELAY:-120}
ONDELAY=${HECATE_NUT_ONDELAY:-180}

case $ENABLE_BOOTSTRAP in 1|0|auto) ;; *) die "HECATE_ENABLE_BOOTSTRAP must be 1, 0 or auto, not '$ENABLE_BOOTSTRAP'" ;; esac
case $ENABLE_UPDATE in 1|0|auto) ;; *) die "HECATE_ENABLE_UPDATE must be 1, 0 or auto, not '$ENABLE_UPDATE'" ;; esac
case $MANAGE_NUT in auto|1|0) ;; *) die "HECATE_MANAGE_NUT must be auto, 1 or 0, not '$MANAGE_NUT'" ;; esac
case $SKIP_APT in 1|0) ;; *) die "HECATE_SKIP_APT must be 1 or 0, not '$SKIP_APT'" ;; esac
[[ $UPS_NAME =~ ^[A-Za-z0-9_-]+$ ]] || die "HECATE_NUT_UPS_NAME '$UPS_NAME' must be letters, digits, '-' or '_'"
[[ $MONITOR_USER =~ ^[A-Za-z0-9_-]+$ ]] || die "HECATE_NUT_MONITOR_USER '$MONITOR_USER' must be letters, digits, '-' or '_'"
[[ $VENDOR_ID =~ ^[0-9A-Fa-f]{4}$ ]] || die "HECATE_NUT_VENDOR_ID '$VENDOR_ID' must be 4 hex digits (e.g. 0764)"
[[ $PRODUCT_ID =~ ^[0-9A-Fa-f]{4}$ ]] || die "HECATE_NUT_PRODUCT_ID '$PRODUCT_ID' must be 4 hex digits (e.g. 0601)"
[[ $OFFDELAY =~ ^[0-9]{1,5}$ ]] && ((10#$OFFDELAY >= 20)) ||
  die "HECATE_NUT_OFFDELAY '$OFFDELAY' must be a number of seconds, at least 20"
[[ $ONDELAY =~ ^[0-9]{1,5}$ ]] && ((10#$ONDELAY > 10#$OFFDELAY)) ||
  die "HECATE_NUT_ONDELAY '$ONDELAY' must be a number of seconds above HECATE_NUT_OFFDELAY ($OFFDELAY)"
OFFDELAY=$((10#$OFFDELAY))
ONDELAY=$((10#$ONDELAY))
# What upsd.users holds in "..." (and nut.pass in a line): no quote, backslash, whitespace or
# control character.
valid_password() { [[ $1 =~ ^[[:graph:]]+$ && $1 != *[\"\\]* ]]; }
LISTEN_SET=${HECATE_NUT_LISTEN+1}
LISTEN_ADDRS=()
if [ -n "$LISTEN_SET" ]; then
  read -r -a LISTEN_ADDRS <<<"${HECATE_NUT_LISTEN//,/ }"
  for a in "${LISTEN_ADDRS[@]}"; do
    [[ $a =~ ^[0-9A-Fa-f:.]+$ && $a == *[.:]* ]] ||
      die "HECATE_NUT_LISTEN: '$a' is not an IPv4 or IPv6 address (separate several with spaces)"
  done
fi
SECONDARIES_SET=${HECATE_NUT_SECONDARIES_FILE+1}
SECONDARIES_FILE=${HECATE_NUT_SECONDARIES_FILE:-}
SECONDARIES=()    # "user password" pairs
if [ -n "$SECONDARIES_FILE" ]; then
  [ -f "$SECONDARIES_FILE" ] && [ -r "$SECONDARIES_FILE" ] ||
    die "HECATE_NUT_SECONDARIES_FILE $SECONDARIES_FILE: not a readable file"
  n=0
  while read -r user pw extra || [ -n "$user" ]; do
    n=$((n + 1))
    [ -z "$user" ] || [[ $user == \#* ]] && continue
    { [[ $user =~ ^[A-Za-z0-9_-]+$ ]] && [ -n "$pw" ] && [ -z "$extra" ] && valid_password "$pw"; } ||
      die "HECATE_NUT_SECONDARIES_FILE line $n: want 'USER PASSWORD' (letters, digits, '-' or '_'; a password without spaces, quotes or backslashes; not shown)"
    SECONDARIES+=("$user $pw")
  done <"$SECONDARIES_FILE"
fi
# sysfs spells the ids in lower case, and udev compares strings
VENDOR_ID=${VENDOR_ID,,}
PRODUCT_ID=${PRODUCT_ID,,}
if [ -n "${HECATE_NUT_MONITOR_PASSWORD:-}" ]; then
  valid_password "$HECATE_NUT_MONITOR_PASSWORD" ||
    die "HECATE_NUT_MONITOR_PASSWORD may hold only printable characters other than space, '\"' and '\\' (not shown)"
fi

IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1
if ((REAL)) && ! ((IS_ROOT)); then
  die "installing into / needs root (sudo $0), or use --root DIR"
fi

# The group of NUT's files: the one NUT's daemons run as, if it exists on this machine.
NUT_GROUP=root
getent group nut >/dev/null 2>&1 && NUT_GROUP=nut

STAGE=$(mktemp -d)
PENDING_TMP=""
cleanup() {
  [ -z "$PENDING_TMP" ] || rm -f -- "$PENDING_TMP"
  rm -rf -- "$STAGE"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
# reporting and idempotent writes. Paths are given as on the target system (/etc/...); the
# root is prepended here.

CHANGES=0
changed() { CHANGES=$((CHANGES + 1)); printf 'updated   %s\n' "$*"; }
unchanged() { printf 'unchanged %s\n' "$*"; }

# meta PATH MODE GROUP: fixes mode and ownership (root:GROUP; ownership only when running as root).
# Prints what it fixed; returns 1 when nothing needed fixing.
meta() {
  local dest=$ROOT$1 mode=$2 group=$3 fixed=""
  if [ "$(stat -c %a -- "$dest")" != "$(printf '%o' "$((8#$mode))")" ]; then
    chmod "$mode" -- "$dest"
    fixed="mode $mode"
  fi
  if ((IS_ROOT)) && [ "$(stat -c %U:%G -- "$dest")" != "root:$group" ]; then
    chown "root:$group" -- "$dest"
    fixed="${fixed:+$fixed, }owner root:$group"
  fi
  [ -n "$fixed" ] || return 1
  printf '%s' "$fixed"
}

# ensure_dir PATH MODE [GROUP]: creates the directory (parents 0755) or fixes its mode and owner.
ensure_dir() {
  local path=$1 mode=$2 group=${3:-root} dest=$ROOT$1 fixed
  if [ -L "$dest" ] || { [ -e "$dest" ] && [ ! -d "$dest" ]; }; then
    die "$dest exists and is not a directory"
  fi
  if [ ! -d "$dest" ]; then
    (umask 022 && mkdir -p -- "$dest")
    meta "$path" "$mode" "$group" >/dev/null || true
    changed "$path/ (created, mode $mode)"
  elif fixed=$(meta "$path" "$mode" "$group"); then
    changed "$path/ ($fixed)"
  else
    unchanged "$path/"
  fi
}

# put_file SRC PATH MODE [GROUP]: makes PATH hold exactly SRC's content with that mode and owner.
# A changed file is written to a temp file in the same directory and renamed over the old one, so
# no reader ever sees half a file. An identical one is left alone (its mtime included).
put_file() {
  local src=$1 path=$2 mode=$3 group=${4:-root} dest=$ROOT$2 fixed
  [ -d "$(dirname -- "$dest")" ] || ensure_dir "$(dirname -- "$path")" 0755
  [ ! -L "$dest" ] || die "$dest is a symlink: refusing to write through it"
  [ ! -d "$dest" ] || die "$dest is a directory, not a file"
  if [ -f "$dest" ] && cmp -s -- "$src" "$dest"; then
    if fixed=$(meta "$path" "$mode" "$group"); then changed "$path ($fixed)"; else unchanged "$path"; fi
    return 0
  fi
  PENDING_TMP=$(mktemp "$(dirname -- "$dest")/.$(basename -- "$dest").XXXXXX")
  cat -- "$src" >"$PENDING_TMP"
  chmod "$mode" -- "$PENDING_TMP"
  ((IS_ROOT)) && chown "root:$group" -- "$PENDING_TMP"
  mv -f -- "$PENDING_TMP" "$dest"
  PENDING_TMP=""
  changed "$path"
}

# set_enabled UNIT TARGET 1|0|auto: the symlink `systemctl enable` makes, managed directly so that
# the same code works under --root and reports exactly what changed.
set_enabled() {
  local unit=$1 target=$2 want=$3
  local path=/etc/systemd/system/$target.wants/$unit
  local link=$ROOT$path
  case $want in
    auto)
      if [ -L "$link" ]; then unchanged "$unit: enabled (kept)"; else unchanged "$unit: not enabled (kept)"; fi ;;
    1)
      if [ -L "$link" ] && [ "$(readlink -- "$link")" = "/etc/systemd/system/$unit" ]; then
        unchanged "$unit: enabled"
      else
        [ -d "$(dirname -- "$link")" ] || ensure_dir "$(dirname -- "$path")" 0755
        ln -sfn -- "/etc/systemd/system/$unit" "$link"
        changed "$unit: enabled ($path)"
      fi ;;
    0)
      if [ -L "$link" ] || [ -e "$link" ]; then
        rm -f -- "$link"
        changed "$unit: disabled (removed $path)"
      else
        unchanged "$unit: not enabled"
      fi ;;
  esac
}

# stage NAME: a path in the staging dir for generated content
stage() { printf '%s/%s' "$STAGE" "$1"; }

# ---------------------------------------------------------------------------------------------
# NUT: whose setup /etc/nut holds

NUT_FILES=(nut.conf ups.conf upsd.conf upsd.users)
NUT_HEADER="# Managed by Hecate's scripts/install.sh"
STAMP=$(date +%Y%m%d-%H%M%S)

# ours PATH: the file starts with Hecate's header.
ours() { head -n 1 -- "$ROOT$1" 2>/dev/null | grep -qF -- "$NUT_HEADER"; }

# The UPS sections of ups.conf ([name] lines, comments aside).
nut_upses() {
  [ -f "$ROOT/etc/nut/ups.conf" ] || return 0
  sed -n 's/^[[:space:]]*\[\([^]]*\)\][[:space:]]*$/\1/p' "$ROOT/etc/nut/ups.conf"
}

# user_in_users NAME: upsd.users has a [NAME] section.
user_in_users() {
  [ -f "$ROOT/etc/nut/upsd.users" ] && grep -qE "^[[:space:]]*\[$1\][[:space:]]*$" -- "$ROOT/etc/nut/upsd.users"
}

# managed_block PATH NAME: the lines between "# >>> NAME" and "# <<< NAME" in one of our files.
managed_block() {
  ours "$1" || return 0
  awk -v name="$2" '
    $0 ~ "^# <<< " name { inside = 0 }
    inside { print }
    $0 ~ "^# >>> " name { inside = 1 }' "$ROOT$1"
}

# put_nut_file SRC PATH: put_file for /etc/nut, keeping a file that was not Hecate's own as
# PATH.hecate-backup-<time> before it is replaced.
put_nut_file() {
  local src=$1 path=$2
  if [ -f "$ROOT$path" ] && ! ours "$path" && ! cmp -s -- "$src" "$ROOT$path"; then
    cp -p -- "$ROOT$path" "$ROOT$path.hecate-backup-$STAMP"
    changed "$path.hecate-backup-$STAMP (the file it replaces, not Hecate's)"
  fi
  put_file "$src" "$path" 0640 "$NUT_GROUP"
}

# NUT_MODE: manage (write /etc/nut), keep (someone else's setup: leave it, say what to add) or
# skip (HECATE_MANAGE_NUT=0).
mapfile -t NUT_UPSES < <(nut_upses)
foreign=0
for f in "${NUT_FILES[@]}"; do
  [ ! -e "$ROOT/etc/nut/$f" ] || ours "/etc/nut/$f" || foreign=1
done
case $MANAGE_NUT in
  0) NUT_MODE=skip ;;
  1) NUT_MODE=manage ;;
  *)
    if ((foreign)) && ((${#NUT_UPSES[@]})); then NUT_MODE=keep; else NUT_MODE=manage; fi ;;
esac
# The package cannot install nut-server as the installer does (it is a Recommends): without it,
# /etc/nut is another package's directory to be, and nothing is written there.
if ((PACKAGE)) && [ "$NUT_MODE" != skip ] &&
  [ "$(dpkg-query --root="${ROOT:-/}" -W -f='${db:Status-Status}' nut-server 2>/dev/null)" != installed ]; then
  NUT_MODE=absent
fi
if [ "$NUT_MODE" = manage ] && ((foreign)); then
  if ((${#NUT_UPSES[@]})); then
    echo "nut: HECATE_MANAGE_NUT=1: replacing the NUT setup in /etc/nut (UPS: ${NUT_UPSES[*]}); its files are kept as FILE.hecate-backup-$STAMP"
  else
    echo "nut: /etc/nut configures no UPS yet: writing Hecate's setup (a file it replaces is kept as FILE.hecate-backup-$STAMP)"
  fi
fi

# ---------------------------------------------------------------------------------------------
# 1. Debian packages (only on the running system)

PACKAGES=(openssh-client ipmitool nut-client git ca-certificates)
[ "$NUT_MODE" != manage ] || PACKAGES+=(nut-server)

if ((PACKAGE)); then
  echo "packages: skipped (--package: the package's dependencies are dpkg's)"
elif ! ((REAL)); then
  echo "packages: skipped (--root)"
elif ((SKIP_APT)); then
  echo "packages: skipped (HECATE_SKIP_APT=1)"
elif ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
  warn "no dpkg/apt-get: install these yourself if missing: ${PACKAGES[*]}"
else
  missing=()
  for p in "${PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    # keep any config file already here (ours included) rather than asking
    apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" </dev/null
    changed "packages: ${missing[*]}"
  else
    unchanged "packages: ${PACKAGES[*]}"
  fi
fi

# ---------------------------------------------------------------------------------------------
# 2. the binary

BINARY_CHANGED=0
if ((PACKAGE)); then
  # dpkg has put it in place
  BIN=/usr/bin/hecate
  BINARY=$ROOT$BIN
elif [ -z "$BINARY" ]; then
  if ! command -v cargo >/dev/null && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null || die "cargo not found: install Rust (rustup), or pass --binary PATH"
  echo "building: cargo build --release --locked -p hecate (in $REPO)"
  (cd "$REPO" && cargo build --release --locked -p hecate) >&2
  target_dir=${CARGO_TARGET_DIR:-$REPO/target}
  case $target_dir in /*) ;; *) target_dir=$REPO/$target_dir ;; esac
  BINARY=$target_dir/release/hecate
fi
{ [ -f "$BINARY" ] && [ -x "$BINARY" ]; } || die "binary $BINARY: not an executable file"
version=$("$BINARY" --version 2>/dev/null) || die "$BINARY --version failed: is it a hecate binary?"
[[ $version == hecate* ]] || die "$BINARY --version says '$version', not hecate"
echo "binary: $version ($BINARY)"

if ! ((PACKAGE)); then
  BIN=/usr/local/bin/hecate
  ensure_dir /usr/local/bin 0755
  if [ -f "$ROOT$BIN" ] && ! cmp -s -- "$BINARY" "$ROOT$BIN"; then
    put_file "$ROOT$BIN" "$BIN.previous" 0755
  fi
  before=$CHANGES
  put_file "$BINARY" "$BIN" 0755
  ((CHANGES == before)) || BINARY_CHANGED=1
fi

# ---------------------------------------------------------------------------------------------
# 3. directories and the config (installed once, never overwritten)

ensure_dir /etc/hecate 0750
ensure_dir /var/lib/hecate 0750

CONFIG=/etc/hecate/hecate.yaml
if ((PACKAGE)); then
  # a conffile: dpkg installs it, and keeps an edited one on upgrades
  if [ -e "$ROOT$CONFIG" ]; then
    unchanged "$CONFIG (the package's conffile: never overwritten once edited)"
  else
    warn "$CONFIG is missing (deleted?): dpkg -i --force-confmiss on the package brings it back"
  fi
elif [ -e "$ROOT$CONFIG" ] || [ -L "$ROOT$CONFIG" ]; then
  unchanged "$CONFIG (exists: never overwritten)"
else
  src=$(stage hecate.yaml)
  # the UPS name, monitor user and kill-power delay in the commented NUT examples are the ones
  # configured below
  sed -e "s/atlasups/$UPS_NAME/g" -e "s/monuser/$MONITOR_USER/g" -e "s/^  #   delay: 120s$/  #   delay: ${OFFDELAY}s/" \
    "$REPO/configs/hecate.example.yaml" >"$src"
  if ((REAL)); then
    host=$(hostname 2>/dev/null || true)
    [[ $host =~ ^[A-Za-z0-9._-]+$ ]] && sed -i "s/^host: hecate-host /host: $host /" "$src"
  fi
  put_file "$src" "$CONFIG" 0640
  echo "          -> edit $CONFIG: as installed it protects nothing (see the comments at its top)"
fi

# ---------------------------------------------------------------------------------------------
# 4. units, the self-update script, the node sudoers rule and stop script

UNITS_CHANGED=0
if ((PACKAGE)); then
  echo "units and shared files: the package's (enabled by its postinst with deb-systemd-helper)"
else
UNITS=(hecate.service hecate-bootstrap.service hecate-update.service hecate-update.timer)
before=$CHANGES
for u in "${UNITS[@]}"; do
  put_file "$REPO/systemd/$u" "/etc/systemd/system/$u" 0644
done
ensure_dir /usr/local/lib/hecate 0755
put_file "$REPO/scripts/self-update.sh" /usr/local/lib/hecate/self-update.sh 0755
ensure_dir /usr/local/share/hecate 0755
ensure_dir /usr/local/share/hecate/sudoers.d 0755
put_file "$REPO/packaging/sudoers.d/hecate-node" /usr/local/share/hecate/sudoers.d/hecate-node 0644
ensure_dir /usr/local/share/hecate/node 0755
put_file "$REPO/packaging/node/hecate-k3s-stop" /usr/local/share/hecate/node/hecate-k3s-stop 0755

set_enabled hecate.service multi-user.target 1
set_enabled hecate-bootstrap.service multi-user.target "$ENABLE_BOOTSTRAP"
set_enabled hecate-update.timer timers.target "$ENABLE_UPDATE"
((CHANGES == before)) || UNITS_CHANGED=1
fi

# ---------------------------------------------------------------------------------------------
# 5. NUT: upsd serving one USB UPS (on loopback, or also to other machines), a monitor user for
# Hecate, the udev rule. Only a setup that is Hecate's own, or that configures no UPS yet, is
# rewritten unasked: an existing one (a NAS served by this upsd, another UPS) is left alone.

NUT_CHANGED=0
UDEV_CHANGED=0
if [ "$NUT_MODE" = skip ]; then
  echo "nut: skipped (HECATE_MANAGE_NUT=0): /etc/nut, the udev rule and /etc/hecate/nut.pass are left alone"
elif [ "$NUT_MODE" = absent ]; then
  echo "nut: the nut-server package is not installed: /etc/nut is left alone. For a UPS on this host:"
  echo "     apt install nut-server && dpkg-reconfigure hecate   (sets NUT up as the installer would)"
else
  users=$ROOT/etc/nut/upsd.users
  # The password: from the environment, else the one already configured for this user, else the
  # one in nut.pass, else a new one. Only ever held in variables and written by builtins: never
  # on a command line, never printed.
  password=${HECATE_NUT_MONITOR_PASSWORD:-}
  if [ -z "$password" ] && [ -f "$users" ]; then
    password=$(awk -v user="$MONITOR_USER" '
      /^[[:space:]]*\[/ { s = $0; gsub(/^[[:space:]]*\[|\][[:space:]]*$/, "", s); in_user = (s == user); next }
      in_user && /^[[:space:]]*password[[:space:]]*=/ {
        v = $0; sub(/^[[:space:]]*password[[:space:]]*=[[:space:]]*/, "", v); sub(/[[:space:]]+$/, "", v)
        if (v ~ /^".*"$/) v = substr(v, 2, length(v) - 2)
        print v; exit
      }' "$users")
  fi
  if [ -z "$password" ] && [ -f "$ROOT/etc/hecate/nut.pass" ]; then
    password=$(head -n 1 -- "$ROOT/etc/hecate/nut.pass")
  fi
  if [ -z "$password" ] || ! valid_password "$password"; then
    password=$(head -c 48 /dev/urandom | base64 -w 0 | tr -dc 'A-Za-z0-9' | cut -c 1-32)
    [ ${#password} -ge 20 ] || die "could not generate a password"
    echo "nut: generated a new password for upsd user $MONITOR_USER (in /etc/hecate/nut.pass)"
  fi
fi

if [ "$NUT_MODE" = keep ]; then
  # Someone else's NUT setup: not one byte of /etc/nut changes. Hecate's own password file is
  # still written, so that the user below can be added with it.
  src=$(stage nut.pass)
  printf '%s\n' "$password" >"$src"
  put_file "$src" /etc/hecate/nut.pass 0640
  unset password
  echo "nut: /etc/nut holds a NUT setup not written by Hecate (UPS: ${NUT_UPSES[*]}): left alone"
  if user_in_users "$MONITOR_USER"; then
    echo "nut: upsd.users already has user $MONITOR_USER (its password is now in /etc/hecate/nut.pass);"
    echo "     it needs 'upsmon primary', 'actions = SET' and 'instcmds = shutdown.return load.off.delay'"
  else
    echo "nut: to let Hecate in, add this user to /etc/nut/upsd.users, its password being the line in"
    echo "     /etc/hecate/nut.pass, and reload upsd (systemctl reload nut-server):"
    echo "       [$MONITOR_USER]"
    echo "         password = \"<the line in /etc/hecate/nut.pass>\""
    echo "         upsmon primary"
    echo "         actions = SET"
    echo "         instcmds = shutdown.return load.off.delay"
  fi
  echo "nut: Hecate's nut source then takes: username: $MONITOR_USER, password_file: /etc/hecate/nut.pass"
  echo "nut: or run again with HECATE_MANAGE_NUT=1 to replace this setup (its files kept as FILE.hecate-backup-<time>)"
elif [ "$NUT_MODE" = manage ]; then
  ensure_dir /etc/nut 0755 "$NUT_GROUP"
  header="$NUT_HEADER: re-running it rewrites this file
# (HECATE_MANAGE_NUT=0 to manage NUT yourself)."

  # The netserver part: the extra LISTEN addresses and secondary users, from the knobs, or, when
  # a knob is unset, from the managed files themselves (a re-run must not take a NAS's server away).
  if [ -n "$LISTEN_SET" ]; then
    extra_listen=""
    for a in ${LISTEN_ADDRS[@]+"${LISTEN_ADDRS[@]}"}; do
      [ "$a" = 127.0.0.1 ] || extra_listen+="LISTEN $a 3493"$'\n'
    done
  else
    extra_listen=$(managed_block /etc/nut/upsd.conf listen)
    [ -z "$extra_listen" ] || extra_listen+=$'\n'
  fi
  if [ -n "$SECONDARIES_SET" ]; then
    secondaries=""
    for entry in ${SECONDARIES[@]+"${SECONDARIES[@]}"}; do
      secondaries+="[${entry%% *}]"$'\n'"  password = \"${entry#* }\""$'\n'"  upsmon secondary"$'\n'
    done
  else
    secondaries=$(managed_block /etc/nut/upsd.users secondaries)
    [ -z "$secondaries" ] || secondaries+=$'\n'
  fi
  mode=standalone
  [ -z "$extra_listen" ] || mode=netserver

  src=$(stage nut.conf)
  cat >"$src" <<EOF
$header
#
# standalone: the driver, upsd and its only client (Hecate) are on this host, and upsd listens on
# loopback only. netserver: upsd also serves other machines (HECATE_NUT_LISTEN, with their users
# from HECATE_NUT_SECONDARIES_FILE in upsd.users). Hecate, not upsmon, decides when this host's
# cluster shuts down: upsmon.conf is not managed here.
MODE=$mode
EOF
  before=$CHANGES
  put_nut_file "$src" /etc/nut/nut.conf

  src=$(stage ups.conf)
  cat >"$src" <<EOF
$header
#
# The UPS on USB (HECATE_NUT_UPS_NAME, HECATE_NUT_VENDOR_ID, HECATE_NUT_PRODUCT_ID). After the
# kill-power command (Hecate's shutdown.ups_off) the UPS cuts its load offdelay seconds later,
# long enough for this host's own power-off, and turns it back on ondelay seconds after the
# command once mains are back (HECATE_NUT_OFFDELAY, HECATE_NUT_ONDELAY; usbhid-ups runs
# shutdown.return with these whatever the command's parameter says). Many CyberPower models
# round both down to whole minutes.
[$UPS_NAME]
  driver = usbhid-ups
  port = auto
  vendorid = $VENDOR_ID
  productid = $PRODUCT_ID
  offdelay = $OFFDELAY
  ondelay = $ONDELAY
EOF
  put_nut_file "$src" /etc/nut/ups.conf

  src=$(stage upsd.conf)
  {
    printf '%s\n#\n' "$header"
    if [ -z "$extra_listen" ]; then
      printf '# Loopback only: Hecate reads the UPS from this host.\n'
    else
      printf '# Loopback for Hecate, and the addresses other machines reach (HECATE_NUT_LISTEN).\n'
    fi
    printf 'LISTEN 127.0.0.1 3493\n'
    if [ -n "$extra_listen" ]; then
      printf '# >>> listen (HECATE_NUT_LISTEN)\n%s# <<< listen\n' "$extra_listen"
    fi
  } >"$src"
  put_nut_file "$src" /etc/nut/upsd.conf

  src=$(stage upsd.users)
  {
    cat <<EOF
$header
#
# Hecate's user (HECATE_NUT_MONITOR_USER); its password is also in /etc/hecate/nut.pass, Hecate's
# password_file. "upsmon primary" lets it log in as the UPS's primary and tell the other clients
# to shut down (FSD); SET lets it set ups.delay.shutdown; the two instant commands are the ones
# shutdown.ups_off may send at the end of a shutdown.
[$MONITOR_USER]
  password = "$password"
  upsmon primary
  actions = SET
  instcmds = shutdown.return
  instcmds = load.off.delay
EOF
    if [ -n "$secondaries" ]; then
      printf '# >>> secondaries (HECATE_NUT_SECONDARIES_FILE): upsmon clients on other machines\n%s# <<< secondaries\n' \
        "$secondaries"
    fi
  } >"$src"
  put_nut_file "$src" /etc/nut/upsd.users
  unset secondaries
  ((CHANGES == before)) || NUT_CHANGED=1

  src=$(stage nut.pass)
  printf '%s\n' "$password" >"$src"
  put_file "$src" /etc/hecate/nut.pass 0640
  unset password

  src=$(stage udev.rules)
  cat >"$src" <<EOF
# Managed by Hecate's scripts/install.sh: the UPS's USB device belongs to group nut, so NUT's
# usbhid-ups driver (running as nut) can open it.
SUBSYSTEM=="usb", ATTR{idVendor}=="$VENDOR_ID", ATTR{idProduct}=="$PRODUCT_ID", MODE="0660", GROUP="nut"
EOF
  before=$CHANGES
  ensure_dir /etc/udev/rules.d 0755
  put_file "$src" /etc/udev/rules.d/90-hecate-nut-ups.rules 0644
  ((CHANGES == before)) || UDEV_CHANGED=1
fi

# ---------------------------------------------------------------------------------------------
# 6. check the config with the installed binary

if out=$("$ROOT$BIN" config check "$ROOT$CONFIG" 2>&1); then
  printf 'config check: %s\n' "$out"
else
  warn "the installed binary rejects $CONFIG; hecate.service will not start until it is fixed:"
  printf '%s\n' "$out" >&2
fi

# ---------------------------------------------------------------------------------------------
# 7. tell the running system (never under --root)

if ((REAL)); then
  if [ -d /run/udev ] && command -v udevadm >/dev/null; then
    if ((UDEV_CHANGED)); then
      if udevadm control --reload-rules &&
        udevadm trigger --action=change --subsystem-match=usb --attr-match="idVendor=$VENDOR_ID"; then
        echo "udev: rules reloaded"
      else
        warn "udevadm could not reload the rules; replug the UPS or reboot"
      fi
    fi
  else
    echo "udev: not running; the rule applies from the next boot"
  fi

  if [ -d /run/systemd/system ]; then
    if ((UNITS_CHANGED || NUT_CHANGED)); then
      systemctl daemon-reload
      echo "systemd: daemon-reload"
    fi
    if ((NUT_CHANGED)); then
      # the driver instances come from ups.conf; upsd re-reads its files on start. From a
      # package's script, through deb-systemd-invoke, which asks policy-rc.d first.
      restart=(systemctl restart)
      ((PACKAGE)) && restart=(deb-systemd-invoke restart)
      if "${restart[@]}" nut-driver-enumerator.service nut-server.service; then
        echo "nut: restarted nut-driver-enumerator and nut-server"
      else
        warn "NUT did not restart cleanly (UPS not plugged in?): see journalctl -u nut-server -u 'nut-driver@*'"
      fi
    fi
    if ((PACKAGE)); then
      : # the postinst enables and restarts hecate.service
    elif systemctl --quiet is-active hecate.service; then
      if ((BINARY_CHANGED || UNITS_CHANGED)); then
        if [ -e /var/lib/hecate/run.lock ] && ! flock -n /var/lib/hecate/run.lock true; then
          warn "a startup or shutdown is running: hecate.service was NOT restarted; restart it when the run is over"
        else
          systemctl restart hecate.service
          echo "systemd: restarted hecate.service"
        fi
      fi
    else
      echo "hecate.service is not running: after editing $CONFIG, start it with: systemctl start hecate"
    fi
  else
    echo "systemd: not running; nothing reloaded (the units are enabled for the next boot)"
  fi
fi

if ((CHANGES == 0)); then
  echo "nothing to change"
else
  echo "$CHANGES change(s) made"
fi
