"""What the selftest collections ask of their guest (vmtest/kernel/selftest_needs.py):
the table against the collections' real `config` files, merging, the kernels it adds
fragments to, and the guest's set-up script it leads to."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmtest.kernel import kconfig, selftest_needs
from vmtest.kernel.build import BuildSpec
from vmtest.kernel.selftest_needs import GuestNeeds, needs_for
from vmtest.kernel.source import parse_source
from vmtest.scenarios.kselftest import guest_setup, parse_setup, shortfalls

DATA = Path(__file__).resolve().parents[1] / "data" / "kselftest"


@pytest.mark.parametrize("collection,config", [
    ("mm", "6.12-mm.config"), ("vm", "6.1-vm.config"),
    ("memory-hotplug", "6.12-memory-hotplug.config")])
def test_every_option_a_collection_asks_for_is_in_its_kernels_fragments(
        collection: str, config: str) -> None:
    """The collection's own `config` (real, from the trees), option by option, in the
    fragments of the kernel its runs get (vmtest's defaults + the needs' fragments)."""
    asked = kconfig.parse_config((DATA / config).read_text())
    assert asked
    names = [*kconfig.DEFAULT_FRAGMENTS, *needs_for([collection]).fragments]
    given: dict[str, str | None] = {}
    for name in names:
        given |= dict(kconfig.load_fragment(name).options)
    missing = {opt: value for opt, value in asked.items() if given.get(opt) != value}
    assert missing == {}


def test_the_reference_fragments_are_not_touched() -> None:
    """The kselftest kernels are other kernels: the reference's fragments stay without
    modules (its cache keys do not change)."""
    for name in kconfig.DEFAULT_FRAGMENTS:
        assert "CONFIG_MODULES" not in dict(kconfig.load_fragment(name).options)
    assert selftest_needs.KSELFTEST_FRAGMENT not in kconfig.DEFAULT_FRAGMENTS


def test_merge_takes_the_larger_and_both_words() -> None:
    merged = needs_for(["mm", "memory-hotplug", "unknown"])
    assert merged.modules == ("test_vmalloc", "test_hmm", "memory-notifier-error-inject")
    assert merged.fragments == (selftest_needs.KSELFTEST_FRAGMENT,)
    assert (merged.numa_nodes, merged.offline_memory_mib, merged.cgroup2) == (2, 512, True)
    assert needs_for([]) == GuestNeeds()
    assert merged.boot_cmdline() == ("hugepagesz=1G", "hugepages=4", "hugepagesz=2M",
                                     "hugepages=128", "secretmem.enable=1")
    assert merged.reserved_mib() == 4 * 1024 + 256


def test_with_fragments_appends_once() -> None:
    spec = BuildSpec(source=parse_source("debian:6.12"),
                     fragments=tuple(kconfig.load_fragment(f)
                                     for f in kconfig.DEFAULT_FRAGMENTS))
    more = selftest_needs.with_fragments(spec, needs_for(["mm"]))
    assert [f.name for f in more.fragments] == [*kconfig.DEFAULT_FRAGMENTS, "kselftest-mm"]
    assert selftest_needs.with_fragments(more, needs_for(["mm"])) is more
    assert selftest_needs.with_fragments(spec, GuestNeeds()) is spec


CONFIG_ALL = "CONFIG_SWAP=y\nCONFIG_ZRAM=y\nCONFIG_CGROUPS=y\nCONFIG_MODULES=y\n"


def test_setup_gives_what_the_kernel_has() -> None:
    plan = guest_setup(needs_for(["mm", "memory-hotplug"]), CONFIG_ALL, modules=True)
    assert plan.not_given == {}
    assert "swapon /dev/zram0" in plan.script and "mount -t cgroup2" in plan.script
    assert "/memory[-_]notifier[-_]error[-_]inject\\.ko'" in plan.script


def test_setup_says_what_a_kernel_without_it_cannot_get() -> None:
    plan = guest_setup(needs_for(["mm"]), "CONFIG_SWAP=y\n", modules=False)
    assert plan.not_given == {
        "swap": "the kernel lacks CONFIG_ZRAM", "cgroup2": "the kernel lacks CONFIG_CGROUPS",
        "module test_vmalloc": "the kernel was built without modules (CONFIG_MODULES, "
                               "kernels/fragments/kselftest-mm.config)",
        "module test_hmm": "the kernel was built without modules (CONFIG_MODULES, "
                           "kernels/fragments/kselftest-mm.config)"}
    assert "swapon" not in plan.script


def test_the_report_of_the_setup_and_its_shortfalls() -> None:
    given = parse_setup("noise\nvmtest-setup swap_kib 1048572\nvmtest-setup "
                        "hugepages-2048kB 128\nvmtest-setup hugepages-1048576kB 2\n"
                        "vmtest-setup numa_nodes 1\nvmtest-setup cpus \n")
    assert given == {"swap_kib": 1048572, "hugepages-2048kB": 128,
                     "hugepages-1048576kB": 2, "numa_nodes": 1}
    assert shortfalls(needs_for(["mm"]), given) == {
        "1 GiB huge pages": "2 of 4 (the kernel or the memory did not give more)",
        "NUMA nodes": "1 of 2 (the kernel or the memory did not give more)"}
