#!/bin/sh
# vmtest's sudo: everything in the guest runs as root, so `sudo [-u USER] CMD ARGS...`
# runs CMD, as USER through busybox su when one other than root is named. Scripts written
# for a workstation (kselftest's run_vmtests.sh: `sudo -u nobody ./on-fault-limit`) run
# as written.
user=""
while [ $# -gt 0 ]; do
    case "$1" in
        -u) user=$2; shift 2 ;;
        -u*) user=${1#-u}; shift ;;
        -E|-H|-n|-S|-k) shift ;;
        --) shift; break ;;
        -*) echo "sudo (vmtest): option $1 not supported" >&2; exit 1 ;;
        *) break ;;
    esac
done
if [ -z "$user" ] || [ "$user" = root ]; then
    exec "$@"
fi
exec su -s /bin/sh "$user" -c 'exec "$0" "$@"' "$@"
