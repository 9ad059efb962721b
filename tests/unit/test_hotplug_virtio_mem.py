"""hotplug-offline's virtio-mem backend: the QMP sequence a real x86-64 run sent
(tests/data/transcripts/6.1-patched-hotplug-offline-virtio-mem-quick, recorded with
scripts/record_transcript.py --set backend=virtio-mem) replayed on the fake machine, the
parameter, the kernel option it needs, and the summaries it takes from the kernel's log."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

from vmtest import config, run, scenarios
from vmtest.errors import ConfigError
from vmtest.guest import memory
from vmtest.kernel import build as kbuild
from vmtest.kernel import kconfig
from vmtest.kernel.build import BuildSpec, BuiltKernel, KernelArtifact
from vmtest.kernel.source import DebianSource
from vmtest.qemu import accel, boot
from vmtest.qemu.fake import FakeMachine, Transcript
from vmtest.scenarios import hotplug_offline

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "data" / "transcripts"
NAME = "6.1-patched-hotplug-offline-virtio-mem-quick"


def _replay(tmp_path: Path, kernel_dir: Path | None = None):
    recorded = json.loads((TRANSCRIPTS / f"{NAME}.result.json").read_text())
    ident = recorded["identity"]
    transcript = Transcript.load(TRANSCRIPTS / f"{NAME}.jsonl.gz")
    scenario = scenarios.make(ident["scenario"], ident["profile"], ident["parameters"])
    scenario.sleep = lambda seconds: None
    spec = BuildSpec(source=DebianSource("6.1"), fragments=(), variant="patched", base="6.1")
    built = BuiltKernel(spec, KernelArtifact(key=ident["build_key"],
                                             directory=kernel_dir or tmp_path,
                                             meta={"release": ident["kernel_release"]}))
    machines: list[FakeMachine] = []

    def factory(*a, **kw):
        machines.append(FakeMachine(*a, transcript=transcript, **kw))
        return machines[-1]

    booted = partial(boot.boot, store=accel.VerdictStore(tmp_path / "accel.json"),
                     machine_class=factory, make_initramfs=lambda tmp, *_, **__: tmp / "initrd")
    doc = run.run_scenario(built, scenario, tmp_path / "run", accel="tcg", boot=booted)
    return doc, recorded, machines, transcript


@pytest.fixture(autouse=True)
def _no_sandbox_probe(monkeypatch):
    monkeypatch.setattr(boot, "sandbox_supported", lambda binary="": False)


def test_the_qmp_sequence_grows_then_shrinks_to_zero_each_iteration(tmp_path):
    doc, recorded, machines, transcript = _replay(tmp_path)
    assert doc["verdict"] == "ok", doc.get("error")
    assert machines[0].replayed_all
    # a device of the grow's size, no pc-dimm and no ACPI firmware asked for
    assert machines[0].spec.virtio_mem_mib == 256
    qmp = [s for s in transcript.steps if "qmp" in s]
    assert {s["qmp"] for s in qmp} == {"memory_devices", "qom-set"}
    asked = [s["args"][0]["value"] >> 20 for s in qmp if s["qmp"] == "qom-set"]
    assert asked == [256, 0, 256, 0]
    # each shrink is marked in the kernel's log around its resize
    marks = [s["ssh"] for s in transcript.steps
             if s.get("ssh", "").startswith("echo '<6>vmtest-scenario:")]
    assert [m.split()[2] for m in marks] == ["step=it0-shrink", "step=it1-shrink"]
    assert doc["resizes"] and [r["direction"] for r in doc["resizes"]] == \
        ["grow", "shrink", "grow", "shrink"]
    ignore = {"seconds"}  # the host's clock: a replay waits for nothing
    assert [{k: v for k, v in r.items() if k not in ignore} for r in doc["resizes"]] == \
        [{k: v for k, v in r.items() if k not in ignore} for r in recorded["resizes"]]


def test_the_metrics_of_both_backends_are_the_same_names_from_the_summaries(tmp_path):
    doc, recorded, _, transcript = _replay(tmp_path)
    m = doc["metrics"]
    assert m == recorded["metrics"]
    assert set(m) - {"vmstat"} == set(hotplug_offline.HotplugOffline.METRICS)
    dmesg = next(s["out"] for s in transcript.steps if s.get("ssh") == "dmesg")
    # every offline_pages() summary of the run is a shrink's (nothing else offlines)
    assert doc["virtio_mem"]["offline_pages_calls"] == dmesg.count("op=offline_pages ") == 4
    # alloc_contig_range()'s dumps (none in this patched run) apart from offline_pages()'s
    assert m["fail_to_migrate_dumps"] == dmesg.count("page dumped because: fail to migrate\n")
    assert m["blocks"] == m["blocks_offlined"] == 4 and m["blocks_timed_out"] == 0
    assert m["drains"] > 0 and m["drains_per_offline"] == round(
        m["drains"] / doc["virtio_mem"]["offline_pages_calls"], 2)
    shrinks = [r for r in doc["resizes"] if r["direction"] == "shrink"]
    assert all(r["marked"] and r["done"] and r["guest_seconds"] > 0 for r in shrinks)
    assert m["offline_seconds_total"] == round(sum(r["guest_seconds"] for r in shrinks), 2)


def test_a_pc_dimm_run_records_its_parameters_as_before():
    pc = scenarios.make("hotplug-offline", "quick", {})
    assert pc.params.backend == "pc-dimm"
    assert not set(hotplug_offline.VIRTIO_MEM_ONLY) & set(pc.parameters())
    assert pc.boot_overrides()["acpi_hotplug"] is True
    assert "virtio_mem_mib" not in pc.boot_overrides() and pc.kernel_needs() == {}
    vm = scenarios.make("hotplug-offline", "quick", {"backend": "virtio-mem"})
    assert vm.parameters()["backend"] == "virtio-mem"
    overrides = vm.boot_overrides()
    assert overrides["virtio_mem_mib"] == 256 and "acpi_hotplug" not in overrides
    assert overrides["maxmem_mib"] >= overrides["memory_mib"] + 256


@pytest.mark.parametrize("value,message", [
    ("dimm", "parameter backend: unknown 'dimm'"),
    ("virtio_mem", "parameter backend: unknown 'virtio_mem'"),
])
def test_an_unknown_backend_is_a_usage_error_naming_the_choices(value, message):
    with pytest.raises(ConfigError, match=message) as exc:
        scenarios.make("hotplug-offline", "quick", {"backend": value})
    assert exc.value.exit_code == 2
    assert exc.value.hint == "choices: pc-dimm, virtio-mem"
    with pytest.raises(ConfigError, match="backend must be str"):
        scenarios.make("hotplug-offline", "quick", {"backend": 1})


def test_an_unknown_backend_in_an_experiment_file_points_at_its_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("kernels:\n  k: {}\nscenarios:\n  hotplug-offline:\n"
                    "    metrics: [drains_per_offline]\n    params:\n"
                    "      backend: acpi\n")
    with pytest.raises(ConfigError, match=r"exp.yaml:7: .*backend: unknown 'acpi'"):
        config.load(path)


def _matrix_file(tmp_path: Path, kernel: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(f"kernels:\n  k:\n{kernel}    variants: {{a: {{}}, b: {{}}}}\n"
                    "scenarios:\n  hotplug-offline:\n    metrics: [drains_per_offline]\n"
                    "    params: {backend: virtio-mem}\n"
                    "matrix: {variants: [a, b], scenarios: [hotplug-offline]}\n")
    return path


def test_an_experiment_refuses_virtio_mem_on_an_x86_kernel_without_the_fragment(tmp_path):
    with pytest.raises(ConfigError) as exc:
        config.load(_matrix_file(tmp_path, ""))
    assert "needs CONFIG_VIRTIO_MEM" in str(exc.value)
    assert "add the fragment virtio-mem" in str(exc.value)
    assert "virtio-mem]" in (exc.value.hint or "")
    exp = config.load(_matrix_file(
        tmp_path, "    fragments: [qemu-guest, mm-migration, mm-selftests, virtio-mem]\n"))
    assert [f.name for f in exp.kernel("k").fragments][-1] == "virtio-mem"
    # arm64's own fragment has it
    config.load(_matrix_file(tmp_path, "    arch: arm64\n"))


def test_a_scenario_run_adds_the_fragment_on_x86_only():
    frags = tuple(kconfig.load_fragment(n) for n in kconfig.DEFAULT_FRAGMENTS)
    spec = BuildSpec(source=DebianSource("6.1"), fragments=frags)
    needs = scenarios.make("hotplug-offline", "quick", {"backend": "virtio-mem"}).kernel_needs()
    assert needs == {"CONFIG_VIRTIO_MEM": "virtio-mem"}
    x86 = kbuild.with_config(spec, needs)
    assert [f.name for f in x86.fragments] == [*kconfig.DEFAULT_FRAGMENTS, "virtio-mem"]
    assert kbuild.with_config(x86, needs) is x86  # there already
    arm64 = BuildSpec(source=DebianSource("6.1"), fragments=frags, arch="arm64")
    assert kbuild.with_config(arm64, needs) is arm64
    assert kbuild.with_config(spec, {}) is spec  # pc-dimm: the default kernel, as cached


@pytest.mark.fault("hotplug-offline backend virtio-mem on a built kernel without "
                   "CONFIG_VIRTIO_MEM (a matrix of an experiment file refuses it on load)",
                   verdict="infrastructure, before QEMU starts", exit="3",
                   message="hotplug-offline backend virtio-mem: the kernel DIR is built "
                           "without CONFIG_VIRTIO_MEM (add the fragment virtio-mem)",
                   kept="result.json")
def test_a_built_kernel_without_virtio_mem_is_refused_before_boot(tmp_path):
    kernel = tmp_path / "k"
    kernel.mkdir()
    (kernel / "config").write_text("CONFIG_MMU=y\n# CONFIG_VIRTIO_MEM is not set\n")
    doc, _, machines, _ = _replay(tmp_path, kernel_dir=kernel)
    # the run's, recorded (run.py: what prepare raises), before any QEMU starts
    assert doc["verdict"] == "infrastructure" and not machines, doc.get("error")
    first = doc["error"].splitlines()[0]
    assert first.startswith("hotplug-offline backend virtio-mem: the kernel ")
    assert first.endswith("built without CONFIG_VIRTIO_MEM (add the fragment virtio-mem)")
    (kernel / "config").write_text("CONFIG_VIRTIO_MEM=y\n")
    assert _replay(tmp_path / "again", kernel_dir=kernel)[0]["verdict"] == "ok"


LOG = """\
[    9.90] vmtest-mm: op=alloc_contig_range seq=1 start_pfn=0x40000 end_pfn=0x40400 ret=0 \
drains=1 drains_all=1 migrate_calls=1 passes=1 failed_pages=0 dumps=0 us=5
[    9.97] vmtest-scenario: step=it0-shrink begin
[   11.50] vmtest-mm: op=alloc_contig_range seq=2 start_pfn=0x108000 end_pfn=0x110000 ret=0 \
drains=1 drains_all=3 migrate_calls=9 passes=9 failed_pages=2 dumps=0 us=5
[   11.85] vmtest-mm: op=offline_pages seq=3 start_pfn=0x108000 end_pfn=0x110000 ret=0 \
drains=1 drains_all=1 migrate_calls=0 passes=0 failed_pages=0 dumps=0 us=5
[   12.97] vmtest-scenario: step=it0-shrink end
[   15.43] vmtest-scenario: step=it1-shrink begin
[   15.71] vmtest-mm: op=offline_pages seq=4 start_pfn=0x100000 end_pfn=0x108000 ret=-16 \
drains=2 drains_all=2 migrate_calls=4 passes=4 failed_pages=1 dumps=0 us=5
"""


def test_a_shrink_gets_the_summaries_between_its_marks():
    from vmtest.collect import dmesg

    assert memory.parse_marks(LOG) == {"it0-shrink": (9.97, 12.97), "it1-shrink": (15.43, None)}
    shrinks = [{"direction": "shrink", "mark": m} for m in ("it0-shrink", "it1-shrink", "none")]
    hotplug_offline.attach_shrink_summaries(shrinks, dmesg.parse(LOG).whole_summaries(),
                                            memory.parse_marks(LOG))
    first, second, unmarked = shrinks
    # the CMA allocation before the mark is not the shrink's
    assert (first["alloc_contig_range"], first["offline_pages"]) == (1, 1)
    assert (first["drains"], first["drains_all"], first["failed_pages"]) == (2, 4, 2)
    assert first["guest_seconds"] == 3.0
    # no end mark (the run ended inside it): to the log's end
    assert (second["offline_pages"], second["failed_ops"], second["guest_seconds"]) == \
        (1, 1, None)
    assert not unmarked["marked"] and unmarked["drains"] == 0 and \
        unmarked["drains_all"] is None
    assert memory.mark_command("it0-shrink", "begin") == \
        "echo '<6>vmtest-scenario: step=it0-shrink begin' > /dev/kmsg"


def test_a_shrink_the_guest_did_not_finish_counts_its_blocks_as_timed_out():
    from vmtest.qemu.virtio_mem import Resize

    sc = scenarios.make("hotplug-offline", "quick", {"backend": "virtio-mem"})
    blocks = ["memory32", "memory33"]
    resizes = [
        hotplug_offline.resize_record(0, "grow", Resize(256, 256, 0.2), blocks),
        hotplug_offline.resize_record(0, "shrink", Resize(0, 0, 3.0), blocks, left=[],
                                      mark="it0-shrink"),
        hotplug_offline.resize_record(1, "grow", Resize(256, 256, 0.2), blocks),
        # asked again twice, still 128 MiB short when the time was up
        hotplug_offline.resize_record(1, "shrink", Resize(0, 128, 40.0, retries=2), blocks,
                                      left=["memory32"], mark="it1-shrink"),
    ]
    out = sc.outcome_resizes(resizes, {}, {}, LOG)
    m = out["metrics"]
    assert (m["blocks"], m["blocks_offlined"], m["blocks_timed_out"]) == (4, 3, 1)
    assert out["virtio_mem"]["unplug_retries"] == 2
    assert (out["virtio_mem"]["shrinks_done"], out["virtio_mem"]["shrinks"]) == (1, 2)
    # the unfinished shrink has no end mark: its time is the host's
    assert m["offline_seconds_total"] == round(3.0 + 40.0, 2)
    assert m["drains"] == 4 and m["drains_per_offline"] == 2.0 and m["failed_pages"] == 3
