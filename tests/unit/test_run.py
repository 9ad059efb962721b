"""run.py: a run's verdict and document, on the fake machine -- the guest crashes, hangs,
the machinery fails, Ctrl-C -- and the guest-clock check that keeps runs with a
miscalibrated TSC out of the results."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

from vmtest import run as experiment
from vmtest import scenarios
from vmtest.errors import ChannelError, CommandTimeout, GuestHang, KernelCrash
from vmtest.kernel import kconfig
from vmtest.kernel.build import BuildSpec, BuiltKernel, KernelArtifact
from vmtest.kernel.source import DebianSource
from vmtest.qemu import accel, boot
from vmtest.qemu.fake import FakeMachine
from vmtest.results import document


def test_clock_ratio():
    assert experiment.clock_ratio((100.0, 10.0), (200.0, 110.0)) == 1.0
    # one seed run: a TSC calibrated at 362 MHz instead of 2445 MHz
    assert experiment.clock_ratio((0.0, 14.0), (1175.0, 14.0 + 2500.0)) == 2.128
    assert abs(experiment.clock_ratio((0.0, 0.0), (100.0, 103.0)) - 1) <= \
        experiment.CLOCK_TOLERANCE


def test_clock_ratio_needs_two_readings_apart():
    assert experiment.clock_ratio(None, (10.0, 10.0)) is None
    assert experiment.clock_ratio((0.0, 0.0), (1.0, 1.0)) is None  # too short to judge


@pytest.mark.fault("guest clock running off", verdict="infrastructure",
                   exit="3 (in a matrix: not a result, --resume runs it again)",
                   message="the guest's clock ran at Rx host time ... this run is not counted",
                   kept="what the run measured, in result.json")
def test_clock_problem_only_beyond_the_tolerance():
    assert experiment.clock_problem(None) is None
    assert experiment.clock_problem(1.03) is None
    assert "2.13x host time" in experiment.clock_problem(2.128)
    assert "0.50x" in experiment.clock_problem(0.5)


@pytest.mark.parametrize("exc,verdict", [
    (KernelCrash("kernel crash in the guest: Kernel panic"), "kernel-crash"),
    (GuestHang("guest did not become ready within 4 s"), "hang"),
    (CommandTimeout("guest command did not finish"), "timeout"),
    (ChannelError("SSH connection to the guest was lost"), "infrastructure"),
    (KeyboardInterrupt(), "interrupted"),
    (TypeError("a bug"), "infrastructure"),
])
def test_verdict_for(exc, verdict):
    got, error = experiment.verdict_for(exc)
    assert got == verdict and error


def test_an_interruption_names_its_signal():
    from vmtest.errors import Terminated

    assert "(SIGTERM)" in experiment.verdict_for(Terminated())[1]
    assert "(SIGINT)" in experiment.verdict_for(KeyboardInterrupt())[1]


def built_kernel(tmp_path: Path, variant: str = "patched") -> BuiltKernel:
    spec = BuildSpec(source=DebianSource("6.1"), fragments=(
        kconfig.load_fragment("qemu-guest"),), patches=(), variant=variant, base="6.1")
    artifact = KernelArtifact(key="f" * 64, directory=tmp_path,
                              meta={"release": f"6.1.192-vmtest-{variant}"}, cached=True)
    return BuiltKernel(spec, artifact)


def fake_boot(tmp_path: Path, **fake) -> partial:
    """boot() on the fake machine, under TCG (no probe), without an initramfs."""
    def no_initramfs(tmp, *_, **__):
        return tmp / "initrd.cpio"

    return partial(boot.boot, store=accel.VerdictStore(tmp_path / "accel.json"),
                   machine_class=partial(FakeMachine, **fake), make_initramfs=no_initramfs)


@pytest.mark.parametrize("end,verdict", [
    (KernelCrash("kernel crash in the guest: Kernel panic - not syncing: sysrq"),
     "kernel-crash"),
    (GuestHang("the guest stopped answering"), "hang"),
    (ChannelError("SSH connection to the guest was lost mid-command"), "infrastructure"),
])
def test_a_guest_failing_mid_run_gives_its_verdict_and_a_document(tmp_path, end, verdict):
    out = tmp_path / "run"
    doc = experiment.run_scenario(built_kernel(tmp_path), scenarios.make("cma-stress", "quick"),
                                  out, accel="tcg", boot=fake_boot(tmp_path, end=end))
    assert doc["verdict"] == verdict and str(end) in doc["error"]
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk["verdict"] == verdict and document.validate(on_disk) == []
    assert on_disk["identity"]["kernel_release"] == "6.1.192-vmtest-patched"
    assert on_disk["identity"]["build_key"] == "f" * 24
    assert on_disk["identity"]["profile"] == "quick"
    assert on_disk["identity"]["parameters"]["count"] == 30
    assert on_disk["timings"]["boot_s"] == 0.5 and "total_s" in on_disk["timings"]


def test_interrupt_writes_interrupted_and_propagates(tmp_path):
    out = tmp_path / "run"

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    def interrupting(*a, **kw):  # Ctrl-C arrives while the run watches its guest
        machine = FakeMachine(*a, **kw)
        machine.check = ctrl_c
        return machine

    booted = partial(boot.boot, store=accel.VerdictStore(tmp_path / "a.json"),
                     machine_class=interrupting,
                     make_initramfs=lambda tmp, *_, **__: tmp / "initrd.cpio")
    with pytest.raises(KeyboardInterrupt):
        experiment.run_scenario(built_kernel(tmp_path), scenarios.make("cma-stress", "quick"),
                                out, accel="tcg", boot=booted)
    assert json.loads((out / "result.json").read_text())["verdict"] == "interrupted"


def test_a_variant_boots_as_it_says_after_the_scenarios_needs(tmp_path):
    from vmtest import config

    exp_file = tmp_path / "e.yaml"
    exp_file.write_text("kernels:\n  k:\n    source: debian:6.1\n    variants:\n"
                        "      thp: {cmdline: 'transparent_hugepage=never', "
                        "machine: {memory: 2G, cpus: 3}}\n")
    variant = config.load(exp_file).kernel("k").variant("thp")
    scenario = scenarios.make("hotplug-offline", "quick")
    opts = experiment.boot_options(scenario, variant, accel="tcg", boot_timeout_s=9)
    plain = experiment.boot_options(scenario, None, accel="tcg", boot_timeout_s=9)
    assert (opts.memory_mib, opts.cpus) == (2048, 3) and plain.memory_mib != 2048
    assert opts.cmdline_extra == (*plain.cmdline_extra, "transparent_hugepage=never")
    assert (opts.accel, opts.boot_timeout_s, opts.slots) == ("tcg", 9, plain.slots)
