"""Scenarios on recorded real guest output: a real quick run's transcript
(tests/data/transcripts, scripts/record_transcript.py) replayed on the fake machine gives
the metrics the real run computed, and they agree with counts taken from the raw logs."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import pytest

from vmtest import run, scenarios
from vmtest.errors import ConfigError
from vmtest.kernel import kconfig
from vmtest.kernel.build import BuildSpec, BuiltKernel, KernelArtifact
from vmtest.kernel.source import DebianSource
from vmtest.qemu import accel, boot
from vmtest.qemu.fake import FakeMachine, ReplayError, Transcript
from vmtest.scenarios import hotplug_offline

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "data" / "transcripts"
# The built-in scenarios' recordings (data-defined ones replay in test_custom_scenario.py).
RECORDED = sorted(p.name.removesuffix(".jsonl.gz") for p in TRANSCRIPTS.glob("*.jsonl.gz")
                  if json.loads(p.with_name(p.name.replace(".jsonl.gz", ".result.json"))
                                .read_text())["identity"]["scenario"] in scenarios.SCENARIOS)


def replay(name: str, tmp_path: Path, transcript: Transcript | None = None):
    """Run the recorded scenario again on a fake machine answering as the real guest did;
    returns (the new document, the recorded document, the fake machine)."""
    recorded = json.loads((TRANSCRIPTS / f"{name}.result.json").read_text())
    ident = recorded["identity"]
    transcript = transcript or Transcript.load(TRANSCRIPTS / f"{name}.jsonl.gz")
    scenario = scenarios.make(ident["scenario"], ident["profile"], ident["parameters"])
    scenario.sleep = lambda seconds: None
    spec = BuildSpec(source=DebianSource("6.1"), fragments=(kconfig.load_fragment(
        "qemu-guest"),), variant=ident["variant"], base=ident["base"])
    built = BuiltKernel(spec, KernelArtifact(key=ident["build_key"], directory=tmp_path,
                                             meta={"release": ident["kernel_release"]}))
    machines: list[FakeMachine] = []

    def factory(*a, **kw):
        machines.append(FakeMachine(*a, transcript=transcript, **kw))
        return machines[-1]

    booted = partial(boot.boot, store=accel.VerdictStore(tmp_path / "accel.json"),
                     machine_class=factory, make_initramfs=lambda tmp, *_, **__: tmp / "initrd")
    doc = run.run_scenario(built, scenario, tmp_path / "run", accel="tcg", boot=booted)
    return doc, recorded, machines[0]


def guest_output(transcript: Transcript, command: str) -> str:
    return next(s["out"] for s in transcript.steps if s.get("ssh") == command)


@pytest.mark.parametrize("name", RECORDED)
def test_replayed_run_gives_the_recorded_metrics(name, tmp_path):
    doc, recorded, fake = replay(name, tmp_path)
    assert doc["verdict"] == "ok", doc.get("error")
    assert fake.replayed_all
    for key in ("metrics", "attribution", "loss", "splats", "operations", "steps", "blocks"):
        assert doc.get(key) == recorded.get(key), key
    same = ("base", "variant", "kernel_release", "build_key", "scenario", "profile",
            "parameters", "seed")
    assert {k: doc["identity"][k] for k in same} == {k: recorded["identity"][k] for k in same}


def test_recordings_cover_both_scenarios():
    assert {n.split("-", 2)[2].rsplit("-", 1)[0] for n in RECORDED} >= {"cma-stress",
                                                                          "hotplug-offline"}


def test_cma_stress_metrics_agree_with_the_raw_logs(tmp_path):
    name = "6.1-unpatched-cma-stress-quick"
    transcript = Transcript.load(TRANSCRIPTS / f"{name}.jsonl.gz")
    doc, _, _ = replay(name, tmp_path, transcript)
    dmesg = guest_output(transcript, "dmesg")
    m = doc["metrics"]
    # Counted independently of the parser: the dump_page() reason lines.
    assert m["fail_to_migrate_dumps"] == len(
        re.findall(r"page dumped because: fail to migrate$", dmesg, re.M)) > 0
    assert m["alloc_contig_range_calls"] == len(re.findall(r"op=alloc_contig_range ", dmesg))
    assert m["alloc_contig_range_failed"] == len(
        re.findall(r"op=alloc_contig_range .*ret=-16", dmesg))
    assert m["allocations"] == 30 == m["allocations_ok"] + m["allocations_failed"]
    assert (tmp_path / "run" / "dmesg.txt").read_text(errors="replace") == dmesg
    assert doc["attribution"] and doc["attribution"][0]["reason"] == "fail to migrate"


def test_a_guest_that_crashes_mid_replay_keeps_the_verdict(tmp_path):
    from vmtest.errors import KernelCrash

    name = "6.1-unpatched-cma-stress-quick"
    full = Transcript.load(TRANSCRIPTS / f"{name}.jsonl.gz")
    cut = Transcript(full.header, full.steps[:6])
    crash = KernelCrash("kernel crash in the guest: Kernel panic - not syncing: Fatal "
                        "exception")
    recorded = json.loads((TRANSCRIPTS / f"{name}.result.json").read_text())
    scenario = scenarios.make("cma-stress", "quick", recorded["identity"]["parameters"])
    scenario.sleep = lambda seconds: None
    spec = BuildSpec(source=DebianSource("6.1"), fragments=(), variant="unpatched", base="6.1")
    built = BuiltKernel(spec, KernelArtifact(key="k" * 64, directory=tmp_path))
    booted = partial(boot.boot, store=accel.VerdictStore(tmp_path / "accel.json"),
                     machine_class=partial(FakeMachine, transcript=cut, end=crash),
                     make_initramfs=lambda tmp, *_, **__: tmp / "initrd")
    doc = run.run_scenario(built, scenario, tmp_path / "run", accel="tcg", boot=booted)
    assert doc["verdict"] == "kernel-crash" and "Fatal exception" in doc["error"]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["verdict"] == \
        "kernel-crash"


def test_a_changed_guest_command_is_caught_by_the_replay(tmp_path):
    name = "6.1-unpatched-cma-stress-quick"
    transcript = Transcript.load(TRANSCRIPTS / f"{name}.jsonl.gz")
    transcript.steps[2] = dict(transcript.steps[2], ssh="something else")
    doc, _, _ = replay(name, tmp_path, transcript)
    assert doc["verdict"] == "infrastructure" and ReplayError.__name__ in doc["error"]


def test_parse_offline_and_attach_summaries():
    out = ("vmtest-step pre pgmigrate_success=10 pgmigrate_fail=0 MemFree=5 \n"
           "rc=0 state=offline start=10.50 end=11.75\n"
           "vmtest-step post pgmigrate_success=60 pgmigrate_fail=2 MemFree=4 \n")
    rec = hotplug_offline.parse_offline(out, 1, "memory40")
    assert rec["offlined"] and not rec["timed_out"] and rec["seconds"] == 1.25
    assert rec["step"]["pgmigrate_success"] == 50 and rec["step"]["pgmigrate_fail"] == 2
    timed_out = hotplug_offline.parse_offline("rc=124 state=online start=1 end=21", 0, "memory41")
    assert timed_out["timed_out"] and not timed_out["offlined"]
    ops = [{"op": "offline_pages", "start_pfn": 40 * 32768, "drains": 1, "migrate_calls": 3},
           {"op": "offline_pages", "start_pfn": 41 * 32768, "drains": 4, "migrate_calls": 2}]
    blocks = [rec, timed_out]
    hotplug_offline.attach_summaries(blocks, ops)
    assert (rec["drains"], rec["migrate_calls"]) == (1, 3)
    assert (timed_out["drains"], timed_out["summary"]["start_pfn"]) == (4, 41 * 32768)


@pytest.mark.parametrize("key,value,message", [
    ("count", "abc", "count must be int, got str"),
    ("cpus", 2.5, "cpus must be int, got float"),
    ("refault_between", 1, "refault_between must be bool"),
    ("nope", 1, "unknown parameter 'nope'"),
    ("fault", "oops", "unknown fault 'oops'"),
])
def test_scenario_parameters_are_type_checked(key, value, message):
    with pytest.raises(ConfigError, match=message):
        scenarios.make("cma-stress", "quick", {key: value})


def test_ints_are_accepted_for_float_parameters():
    assert scenarios.make("cma-stress", "quick", {"period_s": 2}).params.period_s == 2.0


@pytest.mark.parametrize("name", RECORDED)
def test_declared_metrics_are_what_a_run_produces(name, tmp_path):
    """METRICS is what the config checks metric names against: it must list exactly the
    numbers a real run's outcome() has (a missing one would refuse a valid config, an
    extra one let a typo through)."""
    doc, _, _ = replay(name, tmp_path)
    numbers = {k for k, v in doc["metrics"].items() if not isinstance(v, dict)}
    assert set(scenarios.get(doc["identity"]["scenario"]).METRICS) == numbers


class _StallVm:
    """What StallWatch asks of a machine: its checks, QEMU's CPU time, an SSH answer."""

    def __init__(self, answer: str) -> None:
        self.cpu = 10.0
        self.asked: list[str] = []
        vm = self

        class Ssh:
            def check_output(self, command, timeout_s=60):
                vm.asked.append(command)
                return answer

        self._ssh = Ssh()

    def check(self):
        pass

    def cpu_seconds(self):
        return self.cpu

    def ssh(self):
        return self._ssh

    def where_are_the_vcpus(self):
        return "cpu0 migrate_pages+0x10"


def test_a_stall_is_described_once_while_it_lasts_and_a_busy_guest_is_not(tmp_path):
    import io

    from vmtest.scenarios.base import STALL_COMMAND, StallWatch

    answer = ("### pid 80 ppid 1 state S wchan do_wait: sh run_vmtests.sh\n"
              "### pid 91 ppid 80 state D wchan folio_wait_bit_common: ./mremap_test\n"
              "[<0>] folio_wait_bit_common+0x13d/0x350\n")
    vm = _StallVm(answer)
    stall = StallWatch(tmp_path, after_s=300)
    now = [0.0]
    stall.clock = lambda: now[0]
    out = io.BytesIO()
    watch = stall.watching(vm, out)
    out.write(b"ok 1\n")
    watch()
    now[0] = 200.0
    watch()  # quiet, but not for long enough
    assert vm.asked == []
    now[0] = 400.0
    vm.cpu = 10.5  # 0.5 CPU s in 400 s: asleep
    watch()
    watch()  # once per stall
    assert vm.asked == [STALL_COMMAND]
    assert stall.stalls == [{"quiet_s": 400, "report": str(tmp_path / "stall-1.txt"),
                             "blocked": ["pid 91 ppid 80 state D wchan "
                                         "folio_wait_bit_common: ./mremap_test"]}]
    assert (tmp_path / "stall-1.txt").read_text() == \
        "no output for 400 s; the vCPUs idle\n" + answer
    # output again, then quiet with QEMU busy: slow or spinning -- where its vCPUs are
    out.write(b"ok 2\n")
    watch()
    now[0] = 800.0
    vm.cpu = 300.0
    watch()
    assert len(vm.asked) == 2  # the tasks too: a spin may keep another task waiting
    assert stall.stalls[1] == {"quiet_s": 400, "busy": True, "vcpus": "cpu0 migrate_pages+0x10",
                               "report": str(tmp_path / "stall-2.txt"),
                               "blocked": ["pid 91 ppid 80 state D wchan "
                                           "folio_wait_bit_common: ./mremap_test"]}
    assert (tmp_path / "stall-2.txt").read_text().startswith(
        "no output for 400 s; the vCPUs busy at: cpu0 migrate_pages+0x10\n### pid 80")


def test_stuck_tasks_are_the_blocked_else_the_newest_leaves():
    from vmtest.scenarios.base import stuck_tasks

    # what a real stall showed (6.12, run_vmtests.sh's hugetlb cgroup test): no task in D
    report = "\n".join([
        "### pid 1722 ppid 1721 state S wchan do_wait: /bin/bash ./run_vmtests.sh",
        "### pid 23481 ppid 1722 state S wchan do_wait: /bin/bash ./run_vmtests.sh",
        "### pid 23482 ppid 1722 state S wchan pipe_read: sed -e s/^/# /",
        "### pid 23567 ppid 23481 state S wchan do_wait: bash write_hugetlb_memory.sh",
        "[<0>] do_wait+0xc2/0xe8",
        "### pid 23568 ppid 23481 state S wchan pipe_read: tee /tmp/tmp.3kBejB",
        "### pid 23572 ppid 23567 state S wchan hrtimer_nanosleep: ./write_to_hugetlbfs -l",
        "### pid 98 ppid 1 state S wchan do_wait: /bin/sh ./run_kselftest.sh"])
    assert [t.split(" wchan")[0] for t in stuck_tasks(report)] == [
        "pid 23572 ppid 23567 state S", "pid 23568 ppid 23481 state S",
        "pid 23482 ppid 1722 state S"]
    assert stuck_tasks(report + "\n### pid 5 ppid 1 state D wchan io_schedule: sync") == [
        "pid 5 ppid 1 state D wchan io_schedule: sync"]
    # a real report with few leaves: the init's console loop (vmtest's own) is not named
    real = (Path(__file__).resolve().parents[1] / "data" / "stalls" / "6.1-migration.txt")
    named = stuck_tasks(real.read_text())
    assert [t.split(" ppid")[0] for t in named] == ["pid 119", "pid 110"]


STALLS = Path(__file__).resolve().parents[1] / "data" / "stalls"


@pytest.mark.parametrize("name, left", [
    # 6.12 run_vmtests.sh: the hugetlb cgroup test exited, its writer (asleep until
    # killed), the writer's script and the tee of its output left to init
    ("6.12-charge-reserved-hugetlb.txt", [23578, 23579, 23583]),
    # 6.1 vm:migration: the test child spinning on after its harness went away
    ("6.1-migration.txt", [119]),
])
def test_what_a_stalled_test_left_behind_from_real_reports(name, left):
    from vmtest.scenarios.base import leftovers
    from vmtest.scenarios.kselftest import GUEST_DIR

    report = (STALLS / name).read_text()
    markers = ("run_kselftest.sh", "kselftest/runner.sh", GUEST_DIR)
    assert leftovers(report, markers) == left
    # nothing of vmtest's own: the console loop is an orphan too, but older than the run
    assert leftovers(report, ("no such command",)) == []


def test_a_stall_ends_what_the_command_left_behind(tmp_path):
    import io

    from vmtest.scenarios.base import StallWatch

    report = (STALLS / "6.1-migration.txt").read_text().split("\n", 1)[1]
    vm = _StallVm(report)
    stall = StallWatch(tmp_path, after_s=300, reap=("/opt/kselftest",))
    now = [0.0]
    stall.clock = lambda: now[0]
    watch = stall.watching(vm, io.BytesIO())
    watch()
    now[0] = 301.0
    watch()
    assert vm.asked[1] == "kill -9 119 2>/dev/null; :"
    assert stall.stalls[0]["reaped"] == ["119: ./migration "]
