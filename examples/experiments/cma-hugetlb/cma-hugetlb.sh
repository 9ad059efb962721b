#!/bin/sh
# CMA allocations with free hugetlb pages in the CMA area (369fa227c219, v5.14).
#
# The hugetlb pool is grown until KEEP_FREE_MIB of memory is left free: hugetlb pages
# are movable allocations, so once the rest of memory is taken they come from the CMA
# area too (the CmaFree they took is printed). None is mapped: all are free hugetlb
# pages. Then CHUNKS allocations of CHUNK_PAGES 4 KiB pages each are asked of the CMA
# area through debugfs, each kept until the end so the next needs a range of its own.
# With 369fa227c219 alloc_contig_range() replaces and dissolves a free hugetlb page in
# its way; without it the allocation fails (-EBUSY) wherever one sits. Prints
#   cma_hugetlb_mib=<CmaFree taken by the pool> hugepages=<pool size>
#   ok=<allocations that succeeded> tries=<CHUNKS> ok_pct=<percent> allocs_ms=<their time>
# Runs in vmtest's busybox guest as root; needs CONFIG_CMA_DEBUGFS and a cma= area.
set -eu
KEEP_FREE_MIB=${KEEP_FREE_MIB:-160}
CHUNK_PAGES=${CHUNK_PAGES:-2048}
CHUNKS=${CHUNKS:-14}

cma=$(ls -d /sys/kernel/debug/cma/*/ 2>/dev/null | head -1)
[ -n "$cma" ] || { echo "cma-hugetlb.sh: no CMA area in /sys/kernel/debug/cma" >&2; exit 2; }
[ -w /proc/sys/vm/nr_hugepages ] || { echo "cma-hugetlb.sh: no hugetlb" >&2; exit 2; }

field() { awk -v f="$1:" '$1 == f {print $2}' /proc/meminfo; }
held=0
cleanup() {
    [ "$held" -gt 0 ] && echo "$held" > "${cma}free" 2>/dev/null
    echo 0 > /proc/sys/vm/nr_hugepages
}
trap cleanup EXIT

sync
echo 3 > /proc/sys/vm/drop_caches
cma_free0=$(field CmaFree)
free_kib=$(field MemFree)
want=$(( (free_kib / 1024 - KEEP_FREE_MIB) / 2 ))
echo "$want" > /proc/sys/vm/nr_hugepages
pool=$(cat /proc/sys/vm/nr_hugepages)
cma_free1=$(field CmaFree)
echo "cma_hugetlb_mib=$(( (cma_free0 - cma_free1) / 1024 )) hugepages=$pool" \
     "cma_free_mib=$((cma_free1 / 1024)) mem_free_mib=$(( $(field MemFree) / 1024 ))"

now_ns() { awk '/^now at/ {print $3; exit}' /proc/timer_list; }
t0=$(now_ns)
ok=0
i=0
while [ "$i" -lt "$CHUNKS" ]; do
    # A failed cma_alloc() makes the write fail (-ENOMEM): counted, not fatal.
    if echo "$CHUNK_PAGES" > "${cma}alloc" 2>/dev/null; then
        ok=$((ok + 1))
        held=$((held + CHUNK_PAGES))
    fi
    i=$((i + 1))
done
ms=$(awk -v s="$t0" -v e="$(now_ns)" 'BEGIN {printf "%.0f", (e - s) / 1e6}')
echo "ok=$ok tries=$CHUNKS ok_pct=$((ok * 100 / CHUNKS)) allocs_ms=$ms" \
     "hugepages_after=$(cat /proc/sys/vm/nr_hugepages)"
