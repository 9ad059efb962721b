"""KTAP/TAP parsing on the specification's own examples and on recorded kselftest runs
(tests/data/kselftest/README.md says where each file comes from)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmtest.collect import ktap

DATA = Path(__file__).resolve().parents[1] / "data" / "kselftest"


def _parse(name: str) -> list[ktap.TestResult]:
    return ktap.parse((DATA / name).read_text())


def _tree(results: list[ktap.TestResult]) -> dict[str, str]:
    return {path: r.status for path, r in ktap.flatten(results)}


def test_specification_example_hierarchy() -> None:
    # The hierarchy ktap.rst spells out under its example.
    results = _parse("ktap-doc-example.txt")
    assert _tree(results) == {
        "main_test": "fail",
        "main_test::example_test_1": "pass",
        "main_test::example_test_1::test_1": "pass",
        "main_test::example_test_2": "pass",
        "main_test::example_test_2::test_1": "skip",
        "main_test::example_test_2::test_2": "pass",
        "main_test::example_test_3": "fail",
        "main_test::example_test_3::test_1": "pass",
        "main_test::example_test_3::test_2": "fail",
        "main_test::example_test_3::test_3": "skip",
    }
    by_path = dict(ktap.flatten(results))
    assert by_path["main_test::example_test_2::test_1"].reason == "test_1 skipped"
    assert by_path["main_test::example_test_3::test_3"].reason == "test_3 skipped"
    assert by_path["main_test::example_test_3::test_2"].reason == "test_2: FAIL"
    assert by_path["main_test::example_test_1::test_1"].output == ["test_1: initializing test_1"]
    # Leaves only: the parents stand for nothing of their own.
    assert ktap.totals(results) == {"pass": 3, "fail": 1, "skip": 2, "timeout": 0,
                                    "xfail": 0, "missing": 0, "not_built": 0}


@pytest.mark.parametrize("name, expected", [
    ("ktap-doc-two-nested.txt", {"example": "fail", "example::test_1": "pass",
                                 "example::test_2": "fail"}),
    ("ktap-doc-multiple-levels.txt", {
        "example_test_1": "fail", "example_test_1::test_3": "fail",
        "example_test_1::test_3::test_1": "fail", "example_test_1::test_3::test_2": "pass",
        "example_test_1::test_4": "skip", "example_test_2": "pass"}),
])
def test_specification_nesting(name: str, expected: dict[str, str]) -> None:
    assert _tree(_parse(name)) == expected


def test_kselftest_runner_output_6_1() -> None:
    results = _parse("6.1-tcg-madv_populate-soft-dirty-memory-hotplug.log")
    # Two runner invocations' TAP (one per collection), three tests at the top.
    assert [ktap.selftest_id(r.name) for r in results] == [
        "vm:madv_populate", "vm:soft-dirty", "memory-hotplug:mem-on-off-test.sh"]
    madv = results[0]
    assert madv.status == "pass" and len(madv.subtests) == 21
    assert madv.subtests[0].name == "MADV_POPULATE_READ with PROT_READ"
    assert [s.number for s in madv.subtests] == list(range(1, 22))
    # A test without TAP of its own (a shell script) has its output and no subtests.
    hotplug = results[2]
    assert hotplug.subtests == [] and any("offline" in ln for ln in hotplug.output)
    # It passed, and said what it left out (no module to inject notifier errors).
    assert hotplug.status == "pass"
    assert "memory-notifier-error-inject module is not available" in hotplug.reason
    paths = [p for p, _ in ktap.flatten(results)]
    assert len(paths) == len(set(paths)), "paths must be unique"
    assert "vm:madv_populate::range is populated (2)" in paths
    assert ktap.totals(results)["pass"] == 37


@pytest.mark.parametrize("line, status, directive, reason", [
    ("ok 3 selftests: mm: soft-dirty # SKIP", "skip", "SKIP", ""),
    ("ok 1 test_1 # SKIP test_1 skipped", "skip", "SKIP test_1 skipped", "test_1 skipped"),
    ("not ok 2 selftests: vm: run_vmtests.sh # TIMEOUT 45 seconds", "timeout",
     "TIMEOUT 45 seconds", "TIMEOUT 45 seconds"),
    ("not ok 4 selftests: vm: x # exit=1", "fail", "exit=1", "exit=1"),
    ("ok 5 name with # inside", "pass", "", ""),
    ("not ok 6 - dashed name", "fail", "", ""),
    ("ok 7 # SKIP hugetlbfs not mounted", "skip", "SKIP hugetlbfs not mounted",
     "hugetlbfs not mounted"),
    ("not ok 8 flaky # TODO known", "xfail", "TODO known", "known"),
])
def test_result_lines(line: str, status: str, directive: str, reason: str) -> None:
    (result,) = ktap.parse(line)
    assert (result.status, result.directive, result.reason) == (status, directive, reason)


def test_name_and_number() -> None:
    (result,) = ktap.parse("not ok 6 - dashed name")
    assert (result.number, result.name) == (6, "dashed name")
    (result,) = ktap.parse("ok 5 name with # inside")
    assert result.name == "name with # inside"


def test_skip_reason_from_output() -> None:
    # kselftest's runner prints a bare "# SKIP"; the test said why in its output.
    text = ("# selftests: mm: hmm-tests\n# SKIP: test_hmm module not loaded\n"
            "ok 1 selftests: mm: hmm-tests # SKIP\n")
    (result,) = ktap.parse(text)
    assert result.status == "skip" and result.reason == "test_hmm module not loaded"


def test_empty_and_unknown_lines() -> None:
    assert ktap.parse("") == []
    assert ktap.parse("random text\nokay then\n") == []


def test_run_vmtests_before_ktap_6_1_full_collection() -> None:
    """The whole vm collection of 6.1 under TCG: run_vmtests.sh prints no KTAP of its own
    but 'running ./T ARGS' between two rules and [PASS]/[FAIL]/[SKIP]; the tests it runs
    print their own KTAP inside those segments, unindented."""
    results = _parse("6.1-tcg-vm-memory-hotplug-full.log")
    by_path = dict(ktap.flatten(results))
    runner = by_path["vm:run_vmtests.sh"]
    # Every 'running' segment is a subtest, in order; names keep their arguments, "/"
    # included; a test's own "running PKEY tests for ..." line is not a segment.
    names = [s.name for s in runner.subtests]
    assert len(names) == 41 and names[:3] == ["hugepage-mmap", "hugepage-shm", "map_hugetlb"]
    assert "userfaultfd hugetlb_shared 128 32 ./huge/uffd-test" in names
    assert not any("PKEY" in n for n in names) and names[-1] == "soft-dirty"
    # The runner said SKIP (6.1's run_vmtests.sh lets a later skip overwrite a failure's
    # exit code); its subtests say what failed, and the totals count them.
    assert runner.status == "skip"
    madvise = by_path["vm:run_vmtests.sh::hugetlb-madvise ./huge/madvise-test"]
    assert madvise.status == "fail"
    assert madvise.reason == "Unexpected number of free huge pages line 212"
    # KTAP a test printed inside its segment: its subtests (XFAIL kept apart).
    mremap = by_path["vm:run_vmtests.sh::mremap_test"]
    assert [s.status for s in mremap.subtests[:3]] == ["xfail"] * 3
    assert by_path["vm:run_vmtests.sh::test_hmm.sh smoke"].status == "skip"
    assert by_path["vm:run_vmtests.sh::test_hmm.sh smoke"].reason == "CONFIG_TEST_HMM=m"
    totals = ktap.totals(results)
    assert totals["fail"] >= 2 and totals["skip"] >= 5 and totals["xfail"] == 3
    # Leaves only (each runner failed inside its subtests, so adds nothing of its own).
    assert sum(totals.values()) == sum(1 for _, r in ktap.flatten(results) if not r.subtests)


def test_run_vmtests_with_ktap_6_12_full_collection() -> None:
    """6.12's run_vmtests.sh speaks KTAP itself ('ok N name' after each 'running'
    segment) and nests its tests' KTAP one '# ' deeper: one level per test, no
    duplicate of the test under itself."""
    results = _parse("6.12-tcg-mm-memory-hotplug-full.log")
    by_path = dict(ktap.flatten(results))
    runner = by_path["mm:run_vmtests.sh"]
    assert len(runner.subtests) == 57 and runner.subtests[0].name == "hugepage-mmap"
    thuge = by_path["mm:run_vmtests.sh::thuge-gen"]
    assert thuge.status == "fail" and thuge.subtests == []
    assert thuge.reason == "exit=1: Please boot with hugepagesz=1G hugepages=4"
    # The runner's reason: which of its tests failed, not its last output line.
    assert runner.reason.startswith("exit=1: failed: thuge-gen, charge_reserved_hugetlb.sh")
    # A program that did not compile on the host failed with vmtest's stand-in.
    assert "khugepaged did not compile" in by_path["mm:run_vmtests.sh::khugepaged"].reason
    totals = ktap.totals(results)
    assert totals["fail"] == 5 and totals["pass"] > 700 and totals["xfail"] == 3


def test_a_stand_in_is_not_built_and_a_short_plan_is_named(data_dir) -> None:
    """Recorded 6.12 run: khugepaged did not compile in Debian's tree (its stand-in ran),
    memfd_secret planned 5 cases and reported 1."""
    results = ktap.parse((data_dir / "kselftest" /
                          "6.12-tcg-mm-memory-hotplug-full.log").read_text())
    ktap.mark_not_built(results)
    flat = dict(ktap.flatten(results))
    khugepaged = flat["mm:run_vmtests.sh::khugepaged"]
    assert khugepaged.status == "not_built"
    assert khugepaged.reason == ("khugepaged.c did not compile: ‘KSFT_SKIP’ undeclared "
                                 "(first use in this function)")
    assert ktap.totals(results)["not_built"] == 2
    assert [path for path, r in flat.items() if r.plan_mismatch] == [
        "mm:run_vmtests.sh::memfd_secret", "mm:run_vmtests.sh::ksm_functional_tests"]
    assert (flat["mm:run_vmtests.sh::memfd_secret"].planned,
            len(flat["mm:run_vmtests.sh::memfd_secret"].subtests)) == (5, 1)
    # a subtest does not take its parent's plan
    first = next(path for path in flat if path.startswith("mm:run_vmtests.sh::madv_populate::"))
    assert flat[first].planned is None and flat["mm:run_vmtests.sh::madv_populate"].planned
