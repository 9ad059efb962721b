#!/bin/sh
# Fragment memory the way facdaa917c4d's "frag" program does, give kcompactd's
# proactive compaction a fair chance, then time hugetlb allocations.
#
# Why this pattern (mm/compaction.c, 6.1): kcompactd checks the node's fragmentation
# score every HPAGE_FRAG_CHECK_INTERVAL_MSEC (500 ms) and compacts only when it is
# above 100 - proactiveness + 10 (90 at the default 20), then stops at 100 -
# proactiveness (80). The score is extfrag at order 9 (the share of free memory not in
# free 2 MiB blocks), weighted by zone size. Leaving a tenth of memory unfragmented
# (as ../compaction/frag.sh does with FILL_PCT=90) keeps the score near 82, below 90:
# kcompactd never starts. So: fill all but MARGIN_MIB of free memory with four tmpfs
# files written in turn, 64 KiB at a time, and delete three of them -- 3/4 of every
# 2 MiB block freed, in holes too small for a huge page, the score above 95.
# Then wait until the score has fallen to SETTLED_PCT (85: kcompactd at the default
# proactiveness stops at 80) or SETTLE_S seconds passed, whichever first -- the same
# rule for every variant, so with proactiveness 0 the wait is the whole SETTLE_S;
# then ask for
#   FIRST_PCT % of the free memory as hugetlb pages (what proactive compaction can
#   have prepared: it stops at a score of 80, about 20 % of free memory in 2 MiB
#   blocks), timed as alloc1_ms; then up to HALF_PCT % of it, timed as alloc2_ms.
# Prints (one line each): frag_start=, settle_s= frag_before=, then
#   alloc1_ms= got1= alloc2_ms= got2=
# frag_* are the DMA32 zone's unusable index at order 9, in percent.
# Runs in vmtest's busybox guest (sh, awk, mount) as root, debugfs mounted.
set -eu
MARGIN_MIB=${MARGIN_MIB:-32}
SETTLE_S=${SETTLE_S:-30}
FIRST_PCT=${FIRST_PCT:-15}
HALF_PCT=${HALF_PCT:-50}
dir=/tmp/frag
index=/sys/kernel/debug/extfrag/unusable_index

now_ns() { awk '/^now at/ {print $3; exit}' /proc/timer_list; }
# The DMA32 zone's unusable free index at order 9, in percent (integer).
frag_pct() { awk '$4 == "DMA32" {printf "%d\n", $14 * 100; exit}' "$index"; }
ms_since() { awk -v s="$1" -v e="$(now_ns)" 'BEGIN {printf "%.3f\n", (e - s) / 1e6}'; }

cleanup() {
    echo 0 > /proc/sys/vm/nr_hugepages
    umount "$dir" 2>/dev/null || true
}
trap cleanup EXIT

[ -r "$index" ] || { echo "frag.sh: no $index (debugfs)" >&2; exit 2; }
[ -w /proc/sys/vm/nr_hugepages ] || { echo "frag.sh: no hugetlb" >&2; exit 2; }
echo 0 > /proc/sys/vm/nr_hugepages
SETTLED_PCT=${SETTLED_PCT:-85}
proactiveness=$(cat /proc/sys/vm/compaction_proactiveness)

sync
echo 3 > /proc/sys/vm/drop_caches
free_kib=$(awk '/^MemFree:/ {print $2}' /proc/meminfo)
fill_kib=$((free_kib - MARGIN_MIB * 1024))
chunks=$((fill_kib / 64 / 4))   # 64 KiB chunks per file
mkdir -p "$dir"
mount -t tmpfs -o size=$((fill_kib + 4096))k frag "$dir"
awk -v n="$chunks" -v d="$dir" 'BEGIN {
    s = sprintf("%65536s", "")
    for (i = 0; i < n; i++)
        for (f = 0; f < 4; f++) { printf "%s", s > (d "/" f); fflush(d "/" f) }
}'
rm -f "$dir/1" "$dir/2" "$dir/3"
echo "frag_start=$(frag_pct) proactiveness=$proactiveness filled_kib=$fill_kib"

t0=$(now_ns)
waited=0
while [ "$waited" -lt "$SETTLE_S" ] && [ "$(frag_pct)" -gt "$SETTLED_PCT" ]; do
    sleep 1
    waited=$((waited + 1))
done
echo "settle_s=$(ms_since "$t0" | awk '{printf "%.1f", $1 / 1000}') frag_before=$(frag_pct)"

free_kib=$(awk '/^MemFree:/ {print $2}' /proc/meminfo)
n1=$((free_kib / 2048 * FIRST_PCT / 100))
n2=$((free_kib / 2048 * HALF_PCT / 100))
t=$(now_ns)
echo "$n1" > /proc/sys/vm/nr_hugepages
a1=$(ms_since "$t")
got1=$(cat /proc/sys/vm/nr_hugepages)
t=$(now_ns)
echo "$n2" > /proc/sys/vm/nr_hugepages
a2=$(ms_since "$t")
got2=$(cat /proc/sys/vm/nr_hugepages)
echo "alloc1_ms=$a1 got1=$got1 asked1=$n1 alloc2_ms=$a2 got2=$got2 asked2=$n2"
