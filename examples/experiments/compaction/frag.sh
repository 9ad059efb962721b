#!/bin/sh
# Fragment memory with movable pages, wait, then time a hugepage allocation.
#
# Two tmpfs files are written in alternating 64 KiB chunks over most of memory, so
# their pages interleave physically; deleting one leaves nearly every 2 MiB pageblock
# half used by the other: free memory in plenty, but few free huge pages without
# compaction. After SETTLE_S seconds (proactive compaction, vm.compaction_proactiveness,
# works in the background meanwhile: facdaa917c4d, v5.9), NR_HUGEPAGES hugetlb pages
# are asked for at once and the time the kernel took is printed:
#   alloc_ms=<milliseconds> hugepages=<how many it got of NR_HUGEPAGES>
# Runs in vmtest's busybox guest (sh, awk, mount) as root. Environment: FILL_PCT (90)
# percent of MemAvailable to fill, SETTLE_S (10), NR_HUGEPAGES (default: half of the
# free memory after the fragmentation, in 2 MiB pages).
set -eu
FILL_PCT=${FILL_PCT:-90}
SETTLE_S=${SETTLE_S:-10}
dir=/tmp/frag

# Nanoseconds since boot from /proc/timer_list ("now at N nsecs"), else /proc/uptime's
# centiseconds: busybox's date has no %N.
now_ns() {
    if [ -r /proc/timer_list ]; then
        awk '/^now at/ {print $3; exit}' /proc/timer_list
    else
        awk '{printf "%.0f\n", $1 * 1e9}' /proc/uptime
    fi
}

cleanup() {
    echo 0 > /proc/sys/vm/nr_hugepages
    umount "$dir" 2>/dev/null || true
}
trap cleanup EXIT

[ -w /proc/sys/vm/nr_hugepages ] || { echo "frag.sh: no hugetlb (CONFIG_HUGETLBFS)" >&2; exit 2; }
echo 0 > /proc/sys/vm/nr_hugepages
avail_kib=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
fill_kib=$((avail_kib * FILL_PCT / 100))
chunks=$((fill_kib / 64 / 2))   # 64 KiB chunks per file
mkdir -p "$dir"
mount -t tmpfs -o size=$((fill_kib + 4096))k frag "$dir"

# Alternate the two files chunk by chunk (awk flushes each write, so they interleave).
awk -v n="$chunks" -v a="$dir/a" -v b="$dir/b" 'BEGIN {
    s = sprintf("%65536s", "")
    for (i = 0; i < n; i++) {
        printf "%s", s > a; fflush(a)
        printf "%s", s > b; fflush(b)
    }
}'
rm -f "$dir/b"
free_kib=$(awk '/^MemFree:/ {print $2}' /proc/meminfo)
NR_HUGEPAGES=${NR_HUGEPAGES:-$((free_kib / 2048 / 2))}
echo "filled_kib=$fill_kib free_kib=$free_kib nr_hugepages=$NR_HUGEPAGES"
sleep "$SETTLE_S"

start=$(now_ns)
echo "$NR_HUGEPAGES" > /proc/sys/vm/nr_hugepages
end=$(now_ns)
got=$(cat /proc/sys/vm/nr_hugepages)
awk -v s="$start" -v e="$end" -v got="$got" 'BEGIN {
    printf "alloc_ms=%.3f hugepages=%d\n", (e - s) / 1e6, got
}'
