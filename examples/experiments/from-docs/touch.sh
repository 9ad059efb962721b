#!/bin/sh
# First touch of anonymous memory: dd's buffer of SIZE_MIB MiB, filled from /dev/zero
# (so the kernel takes the faults, in clear_user), ROUNDS times; prints touch_ms=N.
# Then it leaves one such buffer held -- dd blocked writing into a pipe that nobody
# reads -- for HOLD_S seconds, so that the "after" /proc/meminfo shows how it is backed.
set -eu
size_mib=${SIZE_MIB:-32}
rounds=${ROUNDS:-4}
hold_s=${HOLD_S:-20}

# /proc/uptime in centiseconds: busybox's date may lack %N
uptime_cs() { awk '{ split($1, t, "."); print t[1] * 100 + t[2] }' /proc/uptime; }

start=$(uptime_cs)
i=0
while [ "$i" -lt "$rounds" ]; do
    dd if=/dev/zero of=/dev/null bs="${size_mib}M" count=1 2>/dev/null
    i=$((i + 1))
done
end=$(uptime_cs)
echo "touch_ms=$(( (end - start) * 10 ))"

( dd if=/dev/zero bs="${size_mib}M" count=1 2>/dev/null | sleep "$hold_s" ) </dev/null >/dev/null 2>&1 &
n=0
while :; do
    pid=$(pidof dd || true)
    rss=0
    if [ -n "$pid" ]; then
        rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    fi
    [ "${rss:-0}" -ge $((size_mib * 1024)) ] && break
    n=$((n + 1))
    if [ "$n" -ge 200 ]; then
        echo "the held buffer never filled (dd pid '$pid', VmRSS ${rss:-?} kB)" >&2
        exit 1
    fi
    sleep 0.1
done
echo "held_rss_kb=$rss"
grep AnonHugePages /proc/meminfo
