#!/bin/sh
# Fake sudo for root sessions on Hecate's test sshd nodes (installed as shim-root/sudo, first on
# root's PATH there). Real sudo would reset PATH to secure_path and run the real
# /usr/bin/systemctl, so for root this one records the call, drops sudo's options and execs the
# command, which then resolves to the recording shim on PATH.
dir=${HECATE_NODE_DIR:-}
if [ -z "$dir" ]; then
  echo "sudo: Hecate test fake sudo called without HECATE_NODE_DIR" >&2
  exit 97
fi
printf '%s node=%s user=%s sudo_user=%s cmd=sudo %s\n' \
  "$(date +%s.%N)" "${HECATE_NODE:-?}" "$(id -un)" "" "$*" >> "$dir/calls.log"
while [ $# -gt 0 ]; do
  case $1 in
    -u|-g|-C|-D|-h|-p|-r|-t|-U) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
exec "$@"
