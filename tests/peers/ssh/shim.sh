#!/bin/sh
# Hecate test shim: stands in for systemctl, shutdown, poweroff, reboot, halt, timedatectl and
# hecate-k3s-stop on a test sshd node (installed as hecate-shim, with one symlink per command
# name). It records the call and never touches the machine.
#
# Files in $HECATE_NODE_DIR (one directory per node, made by hecate-test-support):
#   calls.log     one line appended per call, written when the call starts:
#                 <unix time> node=<node> user=<user> sudo_user=<sudo user or empty> cmd=<name> <args>
#   delay.<name>  seconds (fractions allowed): sleep that long after recording, before exiting
#   exit.<name>   exit code to return instead of 0
#   hook.<name>   an executable the test wrote: run with the call's arguments after recording and
#                 the delay, its output and exit status become the call's (a test's stand-in for
#                 what the real command would do, such as a k3s unit that starts an etcd member)
# HECATE_NODE and HECATE_NODE_DIR come from the node's sshd_config (SetEnv) and survive sudo
# through env_keep in /etc/sudoers.d/hecate-test.
name=${0##*/}
dir=${HECATE_NODE_DIR:-}
if [ -z "$dir" ]; then
  echo "$name: Hecate test shim called without HECATE_NODE_DIR (not on a hecate-test-support sshd node?)" >&2
  exit 97
fi
printf '%s node=%s user=%s sudo_user=%s cmd=%s %s\n' \
  "$(date +%s.%N)" "${HECATE_NODE:-?}" "$(id -un)" "${SUDO_USER:-}" "$name" "$*" >> "$dir/calls.log"
[ -f "$dir/delay.$name" ] && sleep "$(cat "$dir/delay.$name")"
[ -x "$dir/hook.$name" ] && exec "$dir/hook.$name" "$@"
code=0
[ -f "$dir/exit.$name" ] && code=$(cat "$dir/exit.$name")
if [ "$name $1" = "systemctl is-active" ]; then
  if [ "$code" = 0 ]; then echo active; else echo inactive; fi
fi
exit "$code"
