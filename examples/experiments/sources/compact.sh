#!/bin/sh
# ROUNDS times: ask the kernel to compact all memory (/proc/sys/vm/compact_memory) and
# print how long it took; then one JSON line with the count.
set -eu
now_ms() { awk '/^now at/ {printf "%.3f\n", $3 / 1e6; exit}' /proc/timer_list; }
i=0
while [ "$i" -lt "$ROUNDS" ]; do
    s=$(now_ms)
    echo 1 > /proc/sys/vm/compact_memory
    e=$(now_ms)
    awk -v s="$s" -v e="$e" 'BEGIN { printf "round_ms=%.3f\n", e - s }'
    i=$((i + 1))
    sleep 1
done
echo "{\"result\": {\"rounds\": $i}}"
