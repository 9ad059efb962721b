"""What each kernel selftest collection asks of its guest, as data.

kselftest says it in three places: the collection's `config` (kernel options, modules
among them), its runner's checks (mm/run_vmtests.sh: huge pages, cgroup v2, NUMA for
ksm_numa) and the tests' own skip messages ("MADV_PAGEOUT did not work, is swap
enabled?", "Please boot with hugepagesz=1G hugepages=4", "NUMA not available"). vmtest
reads them into one `GuestNeeds` per collection; the kselftest runs (and only those:
the reference experiment's kernels stay as they are) get

- the build: `fragments`, vmtest's config fragments that hold the collection's
  `config` (kernels/fragments/kselftest-mm.config; tests/unit checks the real `config`
  files of 6.1 and 6.12 against them);
- the boot: memory, vCPUs, NUMA nodes, huge pages and other words on the kernel command
  line, CPU features (1 GiB pages need pdpe1gb, which QEMU's qemu64 model lacks);
- the guest's set-up before the tests (scenarios/kselftest.py): swap on zram, cgroup v2
  mounted, the test modules in the initramfs, memory hot-added and left offline.

Data and merging; `with_fragments` loads the fragment files it adds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmtest.kernel.build import BuildSpec

# The fragment that holds what the collections' `config` files ask for beyond vmtest's
# defaults (kconfig.DEFAULT_FRAGMENTS).
KSELFTEST_FRAGMENT = "kselftest-mm"


@dataclass(frozen=True)
class GuestNeeds:
    """One collection's needs (merged: a run's). 0 / () / False: no need."""

    fragments: tuple[str, ...] = ()  # vmtest fragments added to the kernel's
    modules: tuple[str, ...] = ()  # test modules its scripts modprobe (built =m)
    memory_mib: int = 0  # boot memory at least
    cpus: int = 0  # vCPUs at least
    numa_nodes: int = 0  # NUMA nodes at least (0, 1: none)
    hugepages_2m: int = 0  # 2 MiB huge pages reserved at boot
    hugepages_1g: int = 0  # 1 GiB huge pages reserved at boot
    swap_mib: int = 0  # swap (zram) enabled before the tests
    cgroup2: bool = False  # cgroup v2 mounted at /sys/fs/cgroup
    offline_memory_mib: int = 0  # memory hot-added (a DIMM) and left offline
    cmdline: tuple[str, ...] = ()  # other kernel command-line words
    cpu_flags: tuple[str, ...] = ()  # QEMU CPU features (+NAME)

    def merge(self, other: GuestNeeds) -> GuestNeeds:
        """What both need: the larger number, every word of both, either flag."""
        values: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, tuple):
                values[f.name] = tuple(dict.fromkeys((*mine, *theirs)))
            elif isinstance(mine, bool):
                values[f.name] = mine or theirs
            else:
                values[f.name] = max(mine, theirs)
        return GuestNeeds(**values)

    def boot_cmdline(self) -> tuple[str, ...]:
        """The kernel command-line words: huge pages (the 1 GiB ones first: they need
        the largest free ranges), then the others."""
        words: list[str] = []
        if self.hugepages_1g:
            words += ["hugepagesz=1G", f"hugepages={self.hugepages_1g}"]
        if self.hugepages_2m:
            words += ["hugepagesz=2M", f"hugepages={self.hugepages_2m}"]
        return (*words, *self.cmdline)

    def reserved_mib(self) -> int:
        """Memory the huge pages take from the start."""
        return self.hugepages_1g * 1024 + self.hugepages_2m * 2


# The mm collection (tools/testing/selftests/mm from 6.3, vm before).
_MM = GuestNeeds(
    # mm/config: SYSVIPC, USERFAULTFD, PTE_MARKER_UFFD_WP, TEST_VMALLOC=m, DEVICE_PRIVATE,
    # TEST_HMM=m, GUP_TEST, TRANSPARENT_HUGEPAGE, MEM_SOFT_DIRTY (mm-selftests and
    # kselftest-mm); swap, io_uring, secretmem, cgroups and NUMA: the tests' own asks.
    fragments=(KSELFTEST_FRAGMENT,),
    modules=("test_vmalloc", "test_hmm"),
    # thuge-gen: "Please boot with hugepagesz=1G hugepages=4" (mm/thuge-gen.c NUM_PAGES);
    # cow and gup_longterm test every huge page size and skip "need more free huge
    # pages" for a size with none free; run_vmtests.sh wants 256 MiB of the default size
    # (hugetlb_min_KB) and restores the boot count after its userfaultfd part, so the
    # later tests see what the command line reserved.
    hugepages_1g=4, hugepages_2m=128,
    # Beside the 4.25 GiB of huge pages, the 4 GiB the tests had before (mremap_test
    # maps 2 GiB regions: "Cannot allocate memory" with 2 GiB).
    memory_mib=8192,
    # migration (move_pages between two nodes, one thread per CPU but one), mbind in
    # ksm_tests -N and the NUMA cases of cow/migration: "NUMA not available". migration
    # needs 2 threads besides the main one (mm/migration.c: nthreads =
    # numa_num_task_cpus() - 1, "Not enough threads or NUMA nodes available" below 2).
    numa_nodes=2, cpus=3,
    # cow's and others' MADV_PAGEOUT cases: "MADV_PAGEOUT did not work, is swap enabled?"
    swap_mib=1024,
    # run_vmtests.sh: charge_reserved_hugetlb.sh / hugetlb_reparenting_test.sh
    # -cgroup-v2 use the cgroup2 mount (they mount one themselves when none is).
    cgroup2=True,
    # memfd_secret: off by default on 6.1 (mm/secretmem.c secretmem_enable), on in 6.12.
    cmdline=("secretmem.enable=1",),
    # 1 GiB pages: the CPU must have them (arch/x86/mm/hugetlbpage.c: gbpages).
    cpu_flags=("pdpe1gb",),
)

NEEDS: dict[str, GuestNeeds] = {
    "mm": _MM,
    "vm": _MM,
    # memory-hotplug/config: MEMORY_HOTPLUG, MEMORY_HOTREMOVE, NOTIFIER_ERROR_INJECTION,
    # MEMORY_NOTIFIER_ERROR_INJECT=m. mem-on-off-test.sh onlines "hot-pluggable memory in
    # offline state" and offlines a share of the online one: a DIMM hot-added before it
    # (memhp_default_state=offline keeps it offline), 2 blocks of 128 MiB at least.
    "memory-hotplug": GuestNeeds(fragments=(KSELFTEST_FRAGMENT,),
                                 modules=("memory-notifier-error-inject",),
                                 offline_memory_mib=512),
}


def needs_for(collections: Iterable[str]) -> GuestNeeds:
    """The merged needs of the collections (one with no entry needs nothing)."""
    merged = GuestNeeds()
    for coll in collections:
        merged = merged.merge(NEEDS.get(coll, GuestNeeds()))
    return merged


def with_fragments(spec: BuildSpec, needs: GuestNeeds) -> BuildSpec:
    """spec with the fragments `needs` asks for appended (those it has already kept in
    place): another kernel, with its own cache key, beside the one spec names."""
    from dataclasses import replace

    from vmtest.kernel import kconfig

    have = {f.name for f in spec.fragments}
    extra = tuple(kconfig.load_fragment(name) for name in needs.fragments if name not in have)
    return replace(spec, fragments=spec.fragments + extra) if extra else spec
