"""A data-defined scenario (vmtest/scenarios/custom.py) driven through run.run_scenario on
the fake machine: what it sends to the guest, in which order, and the metrics its
outcome computes from the answers.

The answers are real guest output (tests/data/metrics, tests/data/logs: /proc/vmstat and
/proc/meminfo snapshots, a command's stdout, a kernel log and a trace from real 6.1
guests); the order of the exchanges is the scenario's own, written out here step by step
(`scripted`), so a change in what the scenario sends fails these tests until they are
changed with it. A recording of a whole real run replays in
test_replayed_recordings when tests/data/transcripts has one (record_transcript.py)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from vmtest import config, run
from vmtest.collect import metrics
from vmtest.kernel import kconfig
from vmtest.kernel.build import BuildSpec, BuiltKernel, KernelArtifact
from vmtest.kernel.source import DebianSource
from vmtest.qemu import accel, boot
from vmtest.qemu.fake import FakeMachine, Transcript
from vmtest.scenarios import custom, onports

DATA = Path(__file__).resolve().parents[1] / "data"
REC, LOGS = DATA / "metrics", DATA / "logs"
TRANSCRIPTS = DATA / "transcripts"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "experiments" / "compaction" \
    / "compaction.yaml"

EXPERIMENT = """\
kernels:
  k: {source: debian:6.1}
scenarios:
  s:
    run: ./work.sh
    setup: [mkdir -p /tmp/work]
    env: {ROUNDS: 3}
    metrics:
      - {name: allocs_ok, from: stdout, pattern: 'vmtest-alloc i=\\d+ ok=(\\d)', reduce: sum}
      - {name: cma_alloc_success, from: vmstat, counter: cma_alloc_success}
      - {name: cma_free_kb, from: meminfo, field: CmaFree, take: after}
      - {name: cma_pages, from: file, path: /sys/kernel/mm/cma/reserved/alloc_pages_success,
         take: delta}
      - {name: cma_alloc_ms, from: tracefs, begin: cma/cma_alloc_start, end: cma/cma_alloc_finish}
      - {name: fail_dumps, from: dmesg, dump_reason: fail to migrate}
"""
FILE = "/sys/kernel/mm/cma/reserved/alloc_pages_success"


def _snapshot(label: str, file_value: str | None) -> str:
    return ("### vmstat\n" + (REC / f"6.1-cma-stress.vmstat-{label}.txt").read_text()
            + "### meminfo\n" + (REC / f"6.1-cma-stress.meminfo-{label}.txt").read_text()
            + f"### file {FILE}\n" + (file_value if file_value is not None
                                      else "### unreadable") + "\n### end\n")


TOKEN = "0123456789abcdef0123456789abcdef"


def ports_output(answers: list[tuple[str, str, int]]) -> str:
    """What the guest script prints on stdout (scenarios/onports.py): its token, then
    each step's output between its markers."""
    out = [TOKEN + "\n"]
    for name, text, status in answers:
        out += [f"{TOKEN} begin {name}\n", text, f"{TOKEN} end {name} {status}\n"]
    return "".join(out)


def scripted(scenario: custom.CustomScenario, *, status: int = 0, missing_event: str = "",
             file_before: str | None = "0") -> Transcript:
    """One run of `scenario` (the experiment above) as one script on the ports, each of
    its steps answered with recorded real output."""
    spec = scenario.spec
    events = metrics.trace_events(spec.metrics)
    files = metrics.files(spec.metrics)
    steps = [*run._runner_steps((), "start"), *scenario.guest_steps(),
             *run._runner_steps((), "end")]
    # what each step runs, in order: a change in what the scenario sends fails here
    bodies = {s.name: s.body for s in steps}
    assert list(bodies) == ["uptime-start", "events", "setup0", "before", "command", "after",
                            "dmesg", "trace", "uptime-end"]
    check = "; ".join(f"[ -e {custom.TRACING}/events/{e}/enable ] || echo MISSING {e}"
                      for e in events)
    assert bodies["events"].startswith(f"m=$({check})")
    assert bodies["setup0"] == scenario.in_workdir(spec.setup[0])
    assert bodies["before"] == (f"echo '{metrics.DMESG_MARK}' > /dev/kmsg\n"
                                + metrics.snapshot_script(files) + "\n"
                                + custom.tracing_command(events))
    assert bodies["command"] == scenario.in_workdir(spec.run, env=True)
    assert bodies["after"] == (f"echo 0 > {custom.TRACING}/tracing_on\n"
                               + metrics.snapshot_script(files))
    assert bodies["trace"] == f"cat {custom.TRACING}/trace"
    answers = [("uptime-start", "10.00 15.00\n", 0)]
    if missing_event:
        answers.append(("events", f"MISSING {missing_event}\n", 1))
    else:
        answers += [("events", "", 0), ("setup0", "", 0),
                    ("before", _snapshot("before", file_before), 0),
                    ("command", (REC / "6.1-cma-stress.stdout.txt").read_text(), status),
                    ("after", _snapshot("after", "983040"), 0),
                    ("dmesg", (LOGS / "6.1-unpatched-cma.dmesg").read_text(), 0),
                    ("trace", (LOGS / "6.1-unpatched-cma-alloc-timing.trace").read_text(), 0),
                    ("uptime-end", "20.00 35.00\n", 0)]
    return Transcript({"release": "6.1.192-vmtest-patched", "boot_s": 1.0},
                      [{"ports": onports.script(steps), "status": 0,
                        "out": ports_output(answers), "err": "" if missing_event else "warn\n"}])


def drive(scenario, transcript: Transcript, tmp_path: Path,
          variant: config.Variant | None = None) -> tuple[dict, FakeMachine]:
    """run_scenario on the fake machine; with a variant, which run.py boots as it says
    and whose sysctls it sets after boot (as scripts/record_transcript.py recorded)."""
    spec = BuildSpec(source=DebianSource("6.1"), fragments=(kconfig.load_fragment(
        "qemu-guest"),), variant="default", base="k")
    built = BuiltKernel(spec, KernelArtifact(key="k" * 8, directory=tmp_path,
                                             meta={"release": "6.1.192-vmtest-patched"}))
    machines: list[FakeMachine] = []
    options: list[boot.BootOptions] = []

    def factory(*a, **kw):
        machines.append(FakeMachine(*a, transcript=transcript, **kw))
        return machines[-1]

    def initramfs(tmp, *args, **kw):
        return tmp / "initrd"

    @contextlib.contextmanager
    def booted(image, opts, out_dir, **kw):
        options.append(opts)
        with boot.boot(image, opts, out_dir, store=accel.VerdictStore(tmp_path / "a.json"),
                       machine_class=factory, make_initramfs=initramfs, **kw) as vm:
            yield vm

    doc = run.run_scenario(built, scenario, tmp_path / "run", accel="tcg", boot=booted,
                           variant=variant)
    doc["_boot_options"] = options[0]
    return doc, machines[0]


@pytest.fixture
def scenario(tmp_path):
    path = tmp_path / "exp" / "exp.yaml"
    path.parent.mkdir()
    path.write_text(EXPERIMENT)
    (path.parent / "work.sh").write_text("#!/bin/sh\n")
    (path.parent / "work.sh").chmod(0o755)
    sc = config.load(path).scenario("s").make("quick", seed=4)
    assert isinstance(sc, custom.CustomScenario)
    return sc


def test_a_run_computes_every_declared_metric(scenario, tmp_path):
    doc, fake = drive(scenario, scripted(scenario), tmp_path)
    assert doc["verdict"] == "ok", doc.get("error")
    assert fake.replayed_all
    m = doc["metrics"]
    assert list(m) == ["allocs_ok", "cma_alloc_success", "cma_free_kb", "cma_pages",
                       "cma_alloc_ms", "fail_dumps"]
    assert m["allocs_ok"] == 30 and m["cma_alloc_success"] == 30 and m["cma_pages"] == 983040
    assert m["cma_free_kb"] == 254600 and m["fail_dumps"] > 0
    assert m["cma_alloc_ms"] > 0
    assert doc["identity"]["scenario"] == "s" and doc["identity"]["parameters"]["seed"] == 4
    assert doc["exit_status"] == 0 and doc["loss"]["trace_events_lost"] == 0
    run_dir = tmp_path / "run"
    assert (run_dir / "stderr.txt").read_text() == "warn\n"
    assert "vmtest-alloc i=29" in (run_dir / "stdout.txt").read_text()
    assert json.loads((run_dir / "result.json").read_text())["metrics"] == m
    opts = doc["_boot_options"]
    assert opts.copies == ((tmp_path / "exp", custom.GUEST_DIR),) and opts.log_buf_len == "8M"


def test_the_command_runs_in_the_experiments_folder_with_its_environment(scenario):
    script = scenario.in_workdir("./work.sh", env=True)
    assert script.splitlines() == ["cd /root/experiment || exit 125",
                                   "export VMTEST_SEED=4 VMTEST_PROFILE=quick ROUNDS=3",
                                   "./work.sh"]


@pytest.mark.fault("data-defined scenario: the command exits non-zero (no exit metric)",
                   verdict="infrastructure", exit="3",
                   message="scenario S: the command exited N: CMD fix: a command whose status "
                           "is a result: declare a metric `from: exit`",
                   kept="result.json, stdout.txt, stderr.txt, dmesg.txt")
def test_a_failing_command_is_an_infrastructure_failure_not_data(scenario, tmp_path):
    doc, _ = drive(scenario, scripted(scenario, status=2), tmp_path)
    assert doc["verdict"] == "infrastructure"
    assert "the command exited 2" in doc["error"] and "from: exit" in doc["error"]


@pytest.mark.fault("data-defined scenario: a trace event the guest kernel lacks",
                   verdict="infrastructure", exit="3",
                   message="scenario S: the guest kernel has no trace event SUBSYS/NAME",
                   kept="result.json (the command never ran)")
def test_a_missing_trace_event_is_named_before_the_command_runs(scenario, tmp_path):
    doc, fake = drive(scenario, scripted(scenario, missing_event="cma/cma_alloc_finish"),
                      tmp_path)
    assert doc["verdict"] == "infrastructure"
    assert "no trace event cma/cma_alloc_finish" in doc["error"]
    assert fake.replayed_all  # nothing ran after the check


@pytest.mark.fault("data-defined scenario: a metric the guest cannot give (no such vmstat "
                   "counter, meminfo field, readable file, or no matching output)",
                   verdict="infrastructure", exit="3",
                   message="metric M (PATH (delta)): PATH could not be read in the guest (before "
                           "the command)", kept="result.json, the run's outputs")
def test_an_unreadable_file_is_named(scenario, tmp_path):
    doc, _ = drive(scenario, scripted(scenario, file_before=None), tmp_path)
    assert doc["verdict"] == "infrastructure"
    assert f"{FILE} could not be read in the guest (before the command)" in doc["error"]


def test_the_example_boots_as_it_says():
    exp = config.load(EXAMPLE)
    sc = exp.scenario("frag").make("seed")
    assert sc.boot_overrides()["memory_mib"] == 2048 and sc.boot_overrides()["cpus"] == 2
    # what the matrix and bisect size host memory by, as for the built-in scenarios
    assert (sc.params.memory_mib, sc.params.cpus, sc.params.cma_mib) == (2048, 2, 256)
    assert sc.time_limit_s() >= 300
    k = exp.kernel("6.1")
    assert k.variant("thp-never").boot_overrides() == {
        "cmdline_extra": ("transparent_hugepage=never",)}


def test_load_commands():
    spec = custom.LoadSpec(lru_stress=custom.LruStress(ops="mlock"), stress_ng="--vm 1",
                           fill_mib=64, cma_alloc=custom.CmaAlloc(mib=8, period_s=0.5))
    start = spec.start_command(cpus=2, seed=3)
    assert "dd if=/dev/zero of=/dev/shm/fill bs=1M count=64" in start
    assert "setsid lru-stress -w 2 -o mlock" in start and " -s 3 " in start
    assert "setsid stress-ng --vm 1 --timeout 0" in start
    assert "echo 2048 > ${A}alloc" in start and "sleep 0.5" in start
    assert start.endswith("pidof lru-stress >/dev/null")
    assert spec.stop_command().startswith(f"[ -f {custom.CMA_PID} ] && kill")
    assert not custom.LoadSpec().background


# The data-defined scenarios of the examples, by name, with their files.
EXAMPLES = {"frag": EXAMPLE, "every": EXAMPLE.parents[1] / "sources" / "sources.yaml"}
RECORDINGS = sorted(p for p in TRANSCRIPTS.glob("*.jsonl.gz")
                    if any(f"-{name}-" in p.name for name in EXAMPLES))


def test_the_examples_have_recordings():
    assert {n for n in EXAMPLES if any(f"-{n}-" in p.name for p in RECORDINGS)} == set(EXAMPLES)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
def test_replayed_recordings(path, tmp_path):
    """A real run of an example, recorded (scripts/record_transcript.py), replays to the
    metrics it computed."""
    recorded = json.loads(path.with_name(path.name.replace(".jsonl.gz", ".result.json"))
                          .read_text())
    name = recorded["identity"]["scenario"]
    exp = config.load(EXAMPLES[name])
    sc = exp.scenario(name).make(recorded["identity"]["profile"])
    variant = exp.kernel("6.1").variant(recorded["identity"]["variant"])
    doc, fake = drive(sc, Transcript.load(path), tmp_path, variant)
    assert doc["verdict"] == "ok", doc.get("error")
    assert fake.replayed_all
    assert doc["metrics"] == recorded["metrics"]
    assert doc.get("sysctl", {}) == dict(variant.sysctl)  # written and read back
    assert doc["identity"]["boot"] == variant.to_dict()
    if variant.cmdline:  # the variant's kernel parameters after the scenario's own
        assert doc["_boot_options"].cmdline_extra[-len(variant.cmdline):] == variant.cmdline
    assert doc["_boot_options"].memory_mib == (2048 if name == "frag" else 1024)
    assert None not in doc["metrics"].values()
    # the command's own lines, counted apart from the code under test
    out = Path(doc["artifacts"]["stdout"]).read_text()
    if name == "frag":
        assert doc["metrics"]["alloc_ms"] == float(out.split("alloc_ms=")[1].split()[0])
    else:
        rounds = [float(line.split("=")[1]) for line in out.splitlines()
                  if line.startswith("round_ms=")]
        assert doc["metrics"]["rounds_ms"] == pytest.approx(sum(rounds))
        assert doc["metrics"]["rounds"] == len(rounds) == 3


def _frag_doc(variant: str, alloc_ms: float, hugepages: int) -> dict:
    return {"schema": "vmtest-run/1", "run_id": f"{variant}{alloc_ms}", "verdict": "ok",
            "identity": {"base": "6.1", "variant": variant, "scenario": "frag"},
            "metrics": {"alloc_ms": alloc_ms, "compact_stall": 0, "migrate_dumps": 0,
                        "hugepages": hugepages}, "splats": []}


def test_the_comparison_reads_each_metrics_direction():
    """Fewer huge pages is worse (better: higher) though a lower alloc_ms is better."""
    from vmtest import compare

    exp = config.load(EXAMPLE)
    docs = [_frag_doc("proactive-off", 30.0 + i, 200) for i in range(6)] + \
        [_frag_doc("proactive-on", 3.0 + i / 10, 100) for i in range(6)]
    section = compare.build(exp, docs)["sections"][0]
    verdicts = {c["metric"]: c["verdict"] for c in section["comparisons"]}
    assert verdicts["alloc_ms"] == "improved" and verdicts["hugepages"] == "regressed"
    assert section["headline"].startswith("alloc_ms (median per run): proactive-off 32.5 -> "
                                          "proactive-on 3.25")


def test_the_big_kernel_ring_only_for_scenarios_that_count_kernel_messages(tmp_path):
    """8 MiB of ring (thousands of dump_page()s) costs ~0.5 s of a TCG boot: only a
    scenario with a dmesg metric asks for it."""
    path = tmp_path / "exp" / "exp.yaml"
    path.parent.mkdir()
    path.write_text(EXPERIMENT.replace(
        "      - {name: fail_dumps, from: dmesg, dump_reason: fail to migrate}\n", ""))
    (path.parent / "work.sh").write_text("#!/bin/sh\n")
    (path.parent / "work.sh").chmod(0o755)
    quiet = config.load(path).scenario("s").make("quick")
    assert "log_buf_len" not in quiet.boot_overrides()
    path.write_text(EXPERIMENT)
    assert config.load(path).scenario("s").make("quick").boot_overrides()["log_buf_len"] == "8M"
