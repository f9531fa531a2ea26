#!/usr/bin/env bash
# Installs Hecate on this host, or into a directory (--root DIR) for tests and packaging.
# Idempotent: every file is compared before it is written, each is reported as "updated" or
# "unchanged", and a run that changes nothing says "nothing to change".
#
#   scripts/install.sh [--root DIR] [--binary PATH]
#
#   --binary PATH   the hecate binary to install (or HECATE_BINARY=PATH); without it, this
#                   checkout is built with `cargo build --release --locked -p hecate`
#   --root DIR      install under DIR instead of /: no packages, no systemctl, no udevadm;
#                   enablement is the symlinks in DIR/etc/systemd/system/*.wants/ (what
#                   `systemctl --root` manages)
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
#   /etc/nut/{nut.conf,ups.conf,upsd.conf,upsd.users}, /etc/udev/rules.d/90-hecate-nut-ups.rules,
#   /etc/hecate/nut.pass                  unless HECATE_MANAGE_NUT=0
#
# Knobs (environment):
#   HECATE_ENABLE_BOOTSTRAP=1|0|auto  enable/disable hecate-bootstrap.service; auto (default) keeps
#                                     what is there (a first install leaves it disabled)
#   HECATE_ENABLE_UPDATE=1|0|auto     the same for hecate-update.timer
#   HECATE_MANAGE_NUT=1|0             0: leave /etc/nut, the udev rule and nut.pass alone
#   HECATE_NUT_UPS_NAME               default atlasups
#   HECATE_NUT_VENDOR_ID, HECATE_NUT_PRODUCT_ID   USB ids, default 0764 / 0601 (CyberPower)
#   HECATE_NUT_MONITOR_USER           default monuser
#   HECATE_NUT_MONITOR_PASSWORD       default: the one already in upsd.users (or nut.pass), else a
#                                     new random one. It is never printed.
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
while (($#)); do
  case $1 in
    --root) (($# >= 2)) || die "--root needs a directory"; ROOT=$2; shift 2 ;;
    --root=*) ROOT=${1#--root=}; shift ;;
    --binary) (($# >= 2)) || die "--binary needs a path"; BINARY=$2; shift 2 ;;
    --binary=*) BINARY=${1#--binary=}; shift ;;
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

ENABLE_BOOTSTRAP=${HECATE_ENABLE_BOOTSTRAP:-auto}
ENABLE_UPDATE=${HECATE_ENABLE_UPDATE:-auto}
MANAGE_NUT=${HECATE_MANAGE_NUT:-1}
UPS_NAME=${HECATE_NUT_UPS_NAME:-atlasups}
VENDOR_ID=${HECATE_NUT_VENDOR_ID:-0764}
PRODUCT_ID=${HECATE_NUT_PRODUCT_ID:-0601}
MONITOR_USER=${HECATE_NUT_MONITOR_USER:-monuser}
SKIP_APT=${HECATE_SKIP_APT:-0}

case $ENABLE_BOOTSTRAP in 1|0|auto) ;; *) die "HECATE_ENABLE_BOOTSTRAP must be 1, 0 or auto, not '$ENABLE_BOOTSTRAP'" ;; esac
case $ENABLE_UPDATE in 1|0|auto) ;; *) die "HECATE_ENABLE_UPDATE must be 1, 0 or auto, not '$ENABLE_UPDATE'" ;; esac
case $MANAGE_NUT in 1|0) ;; *) die "HECATE_MANAGE_NUT must be 1 or 0, not '$MANAGE_NUT'" ;; esac
case $SKIP_APT in 1|0) ;; *) die "HECATE_SKIP_APT must be 1 or 0, not '$SKIP_APT'" ;; esac
[[ $UPS_NAME =~ ^[A-Za-z0-9_-]+$ ]] || die "HECATE_NUT_UPS_NAME '$UPS_NAME' must be letters, digits, '-' or '_'"
[[ $MONITOR_USER =~ ^[A-Za-z0-9_-]+$ ]] || die "HECATE_NUT_MONITOR_USER '$MONITOR_USER' must be letters, digits, '-' or '_'"
[[ $VENDOR_ID =~ ^[0-9A-Fa-f]{4}$ ]] || die "HECATE_NUT_VENDOR_ID '$VENDOR_ID' must be 4 hex digits (e.g. 0764)"
[[ $PRODUCT_ID =~ ^[0-9A-Fa-f]{4}$ ]] || die "HECATE_NUT_PRODUCT_ID '$PRODUCT_ID' must be 4 hex digits (e.g. 0601)"
# sysfs spells the ids in lower case, and udev compares strings
VENDOR_ID=${VENDOR_ID,,}
PRODUCT_ID=${PRODUCT_ID,,}
if [ -n "${HECATE_NUT_MONITOR_PASSWORD:-}" ]; then
  # written as "..." in upsd.users: no quote, backslash, whitespace or control character
  [[ $HECATE_NUT_MONITOR_PASSWORD =~ ^[[:graph:]]+$ && $HECATE_NUT_MONITOR_PASSWORD != *[\"\\]* ]] ||
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
# 1. Debian packages (only on the running system)

PACKAGES=(openssh-client ipmitool nut-client git ca-certificates)
((MANAGE_NUT)) && PACKAGES+=(nut-server)

if ! ((REAL)); then
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

if [ -z "$BINARY" ]; then
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

BIN=/usr/local/bin/hecate
ensure_dir /usr/local/bin 0755
BINARY_CHANGED=0
if [ -f "$ROOT$BIN" ] && ! cmp -s -- "$BINARY" "$ROOT$BIN"; then
  put_file "$ROOT$BIN" "$BIN.previous" 0755
fi
before=$CHANGES
put_file "$BINARY" "$BIN" 0755
((CHANGES == before)) || BINARY_CHANGED=1

# ---------------------------------------------------------------------------------------------
# 3. directories and the config (installed once, never overwritten)

ensure_dir /etc/hecate 0750
ensure_dir /var/lib/hecate 0750

CONFIG=/etc/hecate/hecate.yaml
if [ -e "$ROOT$CONFIG" ] || [ -L "$ROOT$CONFIG" ]; then
  unchanged "$CONFIG (exists: never overwritten)"
else
  src=$(stage hecate.yaml)
  # the UPS name and monitor user in the commented NUT example are the ones configured below
  sed -e "s/atlasups/$UPS_NAME/g" -e "s/monuser/$MONITOR_USER/g" "$REPO/configs/hecate.example.yaml" >"$src"
  if ((REAL)); then
    host=$(hostname 2>/dev/null || true)
    [[ $host =~ ^[A-Za-z0-9._-]+$ ]] && sed -i "s/^host: hecate-host /host: $host /" "$src"
  fi
  put_file "$src" "$CONFIG" 0640
  echo "          -> edit $CONFIG: as installed it protects nothing (see the comments at its top)"
fi

# ---------------------------------------------------------------------------------------------
# 4. units, the self-update script, the node sudoers rule and stop script

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
UNITS_CHANGED=0
((CHANGES == before)) || UNITS_CHANGED=1

# ---------------------------------------------------------------------------------------------
# 5. NUT: upsd on loopback serving one USB UPS, a monitor user for Hecate, the udev rule

NUT_CHANGED=0
UDEV_CHANGED=0
if ! ((MANAGE_NUT)); then
  echo "nut: skipped (HECATE_MANAGE_NUT=0): /etc/nut, the udev rule and /etc/hecate/nut.pass are left alone"
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
  if [ -z "$password" ] || ! [[ $password =~ ^[[:graph:]]+$ && $password != *[\"\\]* ]]; then
    password=$(head -c 48 /dev/urandom | base64 -w 0 | tr -dc 'A-Za-z0-9' | cut -c 1-32)
    [ ${#password} -ge 20 ] || die "could not generate a password"
    echo "nut: generated a new password for upsd user $MONITOR_USER (in /etc/hecate/nut.pass)"
  fi

  ensure_dir /etc/nut 0755 "$NUT_GROUP"
  header="# Managed by Hecate's scripts/install.sh: re-running it rewrites this file
# (HECATE_MANAGE_NUT=0 to manage NUT yourself)."

  src=$(stage nut.conf)
  cat >"$src" <<EOF
$header
#
# standalone: the driver, upsd and its only client (Hecate) are on this host, and upsd listens on
# loopback only (upsd.conf). netserver would say that upsd serves other machines; switch to it
# together with a LISTEN on a LAN address if they need it. Hecate, not upsmon, decides when the
# cluster shuts down: upsmon.conf is not managed here.
MODE=standalone
EOF
  before=$CHANGES
  put_file "$src" /etc/nut/nut.conf 0640 "$NUT_GROUP"

  src=$(stage ups.conf)
  cat >"$src" <<EOF
$header
#
# The UPS on USB (HECATE_NUT_UPS_NAME, HECATE_NUT_VENDOR_ID, HECATE_NUT_PRODUCT_ID).
[$UPS_NAME]
  driver = usbhid-ups
  port = auto
  vendorid = $VENDOR_ID
  productid = $PRODUCT_ID
EOF
  put_file "$src" /etc/nut/ups.conf 0640 "$NUT_GROUP"

  src=$(stage upsd.conf)
  cat >"$src" <<EOF
$header
#
# Loopback only: Hecate reads the UPS from this host.
LISTEN 127.0.0.1 3493
EOF
  put_file "$src" /etc/nut/upsd.conf 0640 "$NUT_GROUP"

  src=$(stage upsd.users)
  cat >"$src" <<EOF
$header
#
# Hecate's user (HECATE_NUT_MONITOR_USER); its password is also in /etc/hecate/nut.pass, Hecate's
# password_file. "upsmon primary" lets it log in and raise FSD; the two instant commands are the
# ones shutdown.ups_off may send at the end of a shutdown.
[$MONITOR_USER]
  password = "$password"
  upsmon primary
  instcmds = shutdown.return
  instcmds = load.off.delay
EOF
  put_file "$src" /etc/nut/upsd.users 0640 "$NUT_GROUP"
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
      # the driver instances come from ups.conf; upsd re-reads its files on start
      if systemctl restart nut-driver-enumerator.service nut-server.service; then
        echo "nut: restarted nut-driver-enumerator and nut-server"
      else
        warn "NUT did not restart cleanly (UPS not plugged in?): see journalctl -u nut-server -u 'nut-driver@*'"
      fi
    fi
    if systemctl --quiet is-active hecate.service; then
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
