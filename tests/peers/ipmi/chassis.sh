#!/bin/sh
# ipmi_sim chassis_control program. Called by ipmi_sim as:
#   chassis.sh STATEDIR get power           -> prints "power:0|1"
#   chassis.sh STATEDIR set power 0|1       (chassis power off/on; cycle = off, then on 1s later)
#   chassis.sh STATEDIR set reset 1         (chassis power reset)
#   chassis.sh STATEDIR set shutdown 1      (chassis power soft: ACPI soft-off request)
#   chassis.sh STATEDIR set boot pxe|...    (chassis bootdev)
# State: STATEDIR/power (0|1). Every call is appended to STATEDIR/chassis.log.
# Soft-off: power goes to 0 after $(cat STATEDIR/soft_delay) seconds (default 0);
#   write a big number there to simulate an OS that ignores the soft-off request.
# While STATEDIR/ignore_set exists, every `set` is recorded and answered as done but changes
#   nothing: a BMC that acknowledges and does not act. (Hecate's addition to the shared recipe.)
d=$1; shift
echo "$(date +%s.%N) $*" >> "$d/chassis.log"
[ -f "$d/power" ] || echo 1 > "$d/power"
now=$(date +%s)
if [ -f "$d/soft_off_at" ] && [ "$now" -ge "$(cat "$d/soft_off_at")" ]; then echo 0 > "$d/power"; rm -f "$d/soft_off_at"; fi
op=$1; shift
[ "$op" = set ] && [ -f "$d/ignore_set" ] && exit 0
case $op in
  get) for p in "$@"; do case $p in power) echo "power:$(cat "$d/power")";; boot) echo "boot:$(cat "$d/boot" 2>/dev/null || echo default)";; *) echo "Invalid parameter: $p"; exit 1;; esac; done ;;
  set) while [ $# -ge 2 ]; do p=$1; v=$2; shift 2
         case $p in
           power) echo "$v" > "$d/power"; rm -f "$d/soft_off_at";;
           reset) ;;
           shutdown) delay=$(cat "$d/soft_delay" 2>/dev/null || echo 0)
                     if [ "$delay" = 0 ]; then echo 0 > "$d/power"; rm -f "$d/soft_off_at"
                     else echo $(( now + delay )) > "$d/soft_off_at"; fi;;
           boot) echo "$v" > "$d/boot";;
           identify) [ $# -ge 1 ] && shift;;
           *) echo "Invalid parameter: $p"; exit 1;;
         esac; done ;;
  check) exit 1 ;;
  *) echo "Unknown operation: $op"; exit 1 ;;
esac
exit 0
