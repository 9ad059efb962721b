"""The kselftest scenario's pure parts: selection, timeouts, the guest command, the
outcome of a recorded run, and how variants that differ are compared and reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmtest import compare, report, scenarios
from vmtest.errors import ConfigError
from vmtest.kernel.selftests import SelftestInstall, collections_for
from vmtest.scenarios.kselftest import TCG_TIMEOUT_SCALE, Kselftest

DATA = Path(__file__).resolve().parents[1] / "data" / "kselftest"
RECORDED = DATA / "6.1-tcg-madv_populate-soft-dirty-memory-hotplug.log"


@pytest.fixture
def install(tmp_path: Path) -> SelftestInstall:
    """The layout `make -C tools/testing/selftests install` writes (6.1 names)."""
    (tmp_path / "kselftest-list.txt").write_text(
        "vm:madv_populate\nvm:soft-dirty\nvm:split_huge_page_test\nvm:run_vmtests.sh\n"
        "memory-hotplug:mem-on-off-test.sh\n")
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "settings").write_text("timeout=45\n")
    (tmp_path / "vm" / "config").write_text("CONFIG_USERFAULTFD=y\nCONFIG_TEST_HMM=m\n")
    (tmp_path / "memory-hotplug").mkdir()
    return SelftestInstall(tmp_path)


def _scenario(install: SelftestInstall, tests: str, **params: object) -> Kselftest:
    sc = scenarios.make("kselftest", "quick", {"tests": tests, **params})
    assert isinstance(sc, Kselftest)
    sc.install = install
    sc.selected = install.select(tests)
    sc.kernel_config = "CONFIG_USERFAULTFD=y\n"
    return sc


def test_select_names_and_aliases(install: SelftestInstall) -> None:
    # "mm" is what users of 6.3+ type; a 6.1 tree calls it "vm".
    assert install.select("mm") == ["vm:madv_populate", "vm:soft-dirty",
                                    "vm:split_huge_page_test", "vm:run_vmtests.sh"]
    assert install.select("mm:soft-dirty, memory-hotplug") == [
        "vm:soft-dirty", "memory-hotplug:mem-on-off-test.sh"]
    assert install.select("vm:soft-dirty vm") [0] == "vm:soft-dirty"
    with pytest.raises(ConfigError, match="no collection 'net'"):
        install.select("net")
    with pytest.raises(ConfigError, match="no test 'nope'") as exc:
        install.select("vm:nope")
    assert "run_vmtests.sh" in (exc.value.hint or "")


def test_a_program_the_list_does_not_name(install: SelftestInstall) -> None:
    """6.12's mm lists only run_vmtests.sh; its programs run alone through kselftest's
    runner.sh run_many, as the collection's `make run_tests` does."""
    prog = install.directory / "vm" / "khugepaged"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    (install.directory / "vm" / "notes.txt").write_text("not a program\n")
    sc = _scenario(install, "mm:khugepaged mm:soft-dirty")
    assert sc.selected == ["vm:khugepaged", "vm:soft-dirty"]
    cmd = sc.command("kvm")
    assert cmd.endswith("{ ./run_kselftest.sh -t vm:soft-dirty; (cd vm && "
                        "BASE_DIR=/opt/kselftest && . ../kselftest/runner.sh && "
                        "run_many ./khugepaged); }")
    with pytest.raises(ConfigError, match="no test 'notes.txt'"):
        install.select("vm:notes.txt")


def test_collections_of_a_tree(tmp_path: Path) -> None:
    root = tmp_path / "tools/testing/selftests"
    for name in ("mm", "memory-hotplug"):
        (root / name).mkdir(parents=True)
    assert collections_for(tmp_path, "vm:gup_test memory-hotplug") == ("mm", "memory-hotplug")
    with pytest.raises(ConfigError, match="no selftests collection 'bpf'"):
        collections_for(tmp_path, "bpf")


@pytest.mark.parametrize("bad", ["", "vm;reboot", "vm:a:b", "$(x)"])
def test_bad_selection_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError):
        scenarios.make("kselftest", "quick", {"tests": bad})


def test_timeouts_and_command(install: SelftestInstall) -> None:
    sc = _scenario(install, "vm:soft-dirty memory-hotplug")
    # settings x the TCG scale; no settings file: the runner's default 45 s.
    assert sc.timeouts(TCG_TIMEOUT_SCALE) == {"vm": 450, "memory-hotplug": 450}
    assert sc.timeouts(1.0) == {"vm": 45, "memory-hotplug": 45}
    cmd = sc.command("tcg")
    assert "echo timeout=450 > vm/settings" in cmd
    assert cmd.endswith("&& { ./run_kselftest.sh -t vm:soft-dirty -t "
                        "memory-hotplug:mem-on-off-test.sh; }")
    assert "timeout=45 " in sc.command("kvm")
    fixed = _scenario(install, "vm:soft-dirty", timeout_s=7)
    assert "echo timeout=7 > vm/settings" in fixed.command("tcg")
    assert fixed.time_limit_s() == 300 + 7


def test_outcome_of_a_recorded_run(install: SelftestInstall) -> None:
    sc = _scenario(install, "vm:madv_populate vm:soft-dirty memory-hotplug")
    out = sc.outcome(RECORDED.read_text(), dmesg_text="")
    assert out["metrics"]["tests_pass"] == 37 and out["metrics"]["tests_fail"] == 0
    assert out["tests"]["vm:soft-dirty::Test test_simple"] == {"status": "pass"}
    assert out["kselftest"]["config_missing"] == {"vm": ["CONFIG_TEST_HMM=m"]}


def test_a_test_that_never_reported_is_missing(install: SelftestInstall) -> None:
    # The same recording cut where the guest would have died, before soft-dirty reported.
    text = RECORDED.read_text()
    cut = text[:text.index("ok 2 selftests: vm: soft-dirty")]
    sc = _scenario(install, "vm:madv_populate vm:soft-dirty memory-hotplug")
    out = sc.outcome(cut, dmesg_text="")
    assert out["tests"]["vm:soft-dirty"]["status"] == "missing"
    assert out["tests"]["memory-hotplug:mem-on-off-test.sh"]["status"] == "missing"
    assert out["metrics"]["tests_missing"] == 2


def _doc(variant: str, tests: dict[str, str], verdict: str = "ok") -> dict[str, object]:
    return {"identity": {"variant": variant, "base": "6.1", "scenario": "kselftest"},
            "verdict": verdict, "metrics": {"tests_fail": list(tests.values()).count("fail")},
            "tests": {t: {"status": s} for t, s in tests.items()}}


def test_variants_that_differ() -> None:
    base = [_doc("patched", {"vm:a": "pass", "vm:b": "skip", "vm:c": "pass"})] * 2
    cand = [_doc("unpatched", {"vm:a": "fail", "vm:b": "pass", "vm:c": "pass"}),
            _doc("unpatched", {"vm:a": "pass", "vm:b": "pass", "vm:c": "pass"}),
            _doc("unpatched", {"vm:a": "timeout"}, verdict="kernel-crash")]
    diffs = compare.test_differences(base, cand)
    assert diffs == [
        {"test": "vm:a", "baseline": {"pass": 2}, "candidate": {"fail": 1, "pass": 1},
         "regressed": True},
        {"test": "vm:b", "baseline": {"skip": 2}, "candidate": {"pass": 2},
         "regressed": False},
    ]
    assert Kselftest.headline([], base + cand, "patched", "unpatched") == (
        "kselftest failures (median per run): patched 0 -> unpatched 1")


def test_table_says_why() -> None:
    doc = {"identity": {"kernel_release": "6.1.192-vmtest-patched", "accel": "tcg"},
           "verdict": "ok", "metrics": {"tests_pass": 1, "tests_skip": 1, "tests_fail": 0},
           "tests": {"vm:run_vmtests.sh": {"status": "pass"},
                     "vm:run_vmtests.sh::hmm-tests": {"status": "skip",
                                                     "reason": "test_hmm not loaded",
                                                     "config_missing": ["CONFIG_TEST_HMM=m"]}},
           "kselftest": {"config_missing": {"vm": ["CONFIG_TEST_HMM=m"]}}}
    text = report.kselftest_table(doc)
    assert "    hmm-tests" in text  # nested under its runner
    assert "SKIP     test_hmm not loaded; kernel lacks CONFIG_TEST_HMM=m" in text
    assert "totals: 1 pass, 1 skip" in text
    assert "vm/config asks for what this kernel lacks: CONFIG_TEST_HMM=m" in text


@pytest.mark.parametrize("text, expected", [
    ("vm:run_vmtests.sh::test_hmm.sh smoke CONFIG_TEST_HMM=m", ["CONFIG_TEST_HMM=m"]),
    ("vm:run_vmtests.sh::test_vmalloc.sh smoke", ["CONFIG_TEST_VMALLOC=m"]),
    ("vm:run_vmtests.sh::ksm_tests -N NUMA support not enabled", []),
    ("vm:x::y the device_private pages", ["CONFIG_DEVICE_PRIVATE=y"]),
])
def test_a_skip_names_the_options_it_points_at(text: str, expected: list[str]) -> None:
    from vmtest.scenarios.kselftest import related_options
    missing = ["CONFIG_TEST_VMALLOC=m", "CONFIG_DEVICE_PRIVATE=y", "CONFIG_TEST_HMM=m"]
    assert related_options(text, missing) == expected


def test_skips_by_reason_count_leaves_only() -> None:
    from vmtest.scenarios.kselftest import skip_reasons

    tests = {"mm:run_vmtests.sh": {"status": "fail"},
             "mm:run_vmtests.sh::cow": {"status": "skip", "reason": "a runner's skip"},
             "mm:run_vmtests.sh::cow::x": {"status": "skip", "reason": "no swap"},
             "mm:run_vmtests.sh::cow::y": {"status": "skip", "reason": "no swap"},
             "mm:run_vmtests.sh::cow::z": {"status": "skip"},
             "mm:run_vmtests.sh::cow::w": {"status": "pass"}}
    assert skip_reasons(tests) == {"no swap": 2, "(no reason given)": 1}


def test_boot_gives_what_the_collections_ask_for(install: SelftestInstall,
                                                 tmp_path: Path) -> None:
    from vmtest.kernel.selftest_needs import needs_for

    sc = _scenario(install, "vm:soft-dirty memory-hotplug", memory_mib=5001)
    sc.needs = needs_for(sc.collections())
    sc.layer = tmp_path / "layer.cpio"
    boot = sc.boot_overrides()
    # the larger of the parameter and the needs, split evenly over two nodes
    assert (boot["memory_mib"], boot["numa_nodes"], boot["cpus"]) == (8192, 2, 3)
    assert boot["maxmem_mib"] == 8192 + 4096 and boot["cpu_flags"] == ("pdpe1gb",)
    assert boot["cmdline_extra"][:2] == ("hugepagesz=1G", "hugepages=4")
    sc = _scenario(install, "memory-hotplug", memory_mib=5001)
    sc.needs = needs_for(sc.collections())
    sc.layer = tmp_path / "layer.cpio"
    boot = sc.boot_overrides()
    assert (boot["memory_mib"], boot["numa_nodes"], boot["cmdline_extra"]) == (5001, 0, ())


def test_an_interrupted_run_keeps_the_tests_that_reported(install: SelftestInstall,
                                                         tmp_path: Path) -> None:
    """SIGINT/SIGTERM mid-run: the document stays not a result (interrupted), and what
    reported before the stop is kept under `partial` (run._keep_partial)."""
    from vmtest import run as run_mod

    text = RECORDED.read_text()
    sc = _scenario(install, "vm:madv_populate vm:soft-dirty memory-hotplug")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    doc: dict[str, object] = {"verdict": "interrupted", "metrics": {}}
    run_mod._keep_partial(doc, sc, run_dir)
    assert "partial" not in doc  # no log yet: nothing to keep
    (run_dir / "kselftest.log").write_text(text[:text.index("ok 2 selftests: vm: soft-dirty")])
    run_mod._keep_partial(doc, sc, run_dir)
    partial = doc["partial"]
    assert isinstance(partial, dict) and doc["verdict"] == "interrupted"
    assert partial["metrics"]["tests_pass"] > 0 and partial["metrics"]["tests_missing"] == 2
    assert partial["tests"]["vm:soft-dirty"]["status"] == "missing"


def test_the_selftests_of_an_arm64_kernel_are_cross_built():
    """kselftest's lib.mk takes CC from CROSS_COMPILE and the uapi headers from ARCH:
    both given for arm64, neither for the host's own architecture."""
    from pathlib import Path

    from vmtest.kernel import selftests

    tree, out = Path("/src/linux"), Path("/cache/out")
    native = selftests.make_argv(tree, out, ("mm", "memory-hotplug"), 3)
    assert native == ["make", "-C", "/src/linux/tools/testing/selftests", "O=/cache/out",
                      "TARGETS=mm memory-hotplug", "-j3"]
    cross = selftests.make_argv(tree, out, ("mm",), 3, "arm64")
    assert cross == ["make", "-C", "/src/linux/tools/testing/selftests", "O=/cache/out",
                     "ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-", "TARGETS=mm", "-j3"]


def test_a_program_built_for_another_architecture_is_named(tmp_path):
    """An x86-64 selftest in an arm64 guest's layer would fail with a loader the guest
    lacks: refused before the boot, naming the file and both architectures. A 32-bit
    program (kselftest's *_32, built where the host has multilib) runs in its 64-bit
    guest."""
    import pytest

    from vmtest.errors import ConfigError
    from vmtest.guest import rootfs

    def elf(name, machine):  # an ELF header: e_machine at 18, little-endian
        path = tmp_path / name
        header = bytearray(b"\x7fELF\x02\x01\x01" + bytes(57))
        header[18:20] = machine.to_bytes(2, "little")
        path.write_bytes(bytes(header))
        return path

    x86 = elf("compaction_test", 62)
    i386 = elf("protection_keys_32", 3)
    arm64 = elf("madv_populate", 183)
    rootfs.check_elf_arch([x86, i386], "x86_64")
    rootfs.check_elf_arch([arm64], "arm64")
    with pytest.raises(ConfigError, match="compaction_test is built for x86_64, the guest "
                                          "is arm64"):
        rootfs.check_elf_arch([arm64, x86], "arm64")
    with pytest.raises(ConfigError, match="built for i386, the guest is arm64"):
        rootfs.check_elf_arch([i386], "arm64")
    with pytest.raises(ConfigError, match="madv_populate is built for arm64, the guest is "
                                          "x86_64"):
        rootfs.check_elf_arch([arm64], "x86_64")
