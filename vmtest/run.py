"""One run: (built kernel, scenario, run directory) -> one result document.

Boot, let the scenario drive the guest, map what happened to a verdict, write the
document (vmtest/results/document.py) whatever happened. Builds nothing: the caller hands
in a built kernel (vmtest/kernel/build.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest.collect import guest
from vmtest.errors import Terminated, VmtestError
from vmtest.guest import sysctl as sysctl_mod
from vmtest.kernel.build import BuiltKernel
from vmtest.outcome import RunVerdict
from vmtest.qemu import boot as boot_mod
from vmtest.qemu.machine import Machine
from vmtest.results import document
from vmtest.scenarios import onports
from vmtest.scenarios.base import Scenario

if TYPE_CHECKING:
    from vmtest.config import Variant

log = logging.getLogger(__name__)

# How far the guest's clock may drift from the host's over a run before the run is not
# trusted (a TSC calibrated against a starved PIT made one guest's clock run 2x fast).
CLOCK_TOLERANCE = 0.05

Reading = tuple[float, float]  # (host monotonic s, guest uptime s)


def _guest_uptime(vm: Machine) -> Reading | None:
    """(host monotonic, guest uptime) read together; None if the guest cannot say."""
    try:
        before = time.monotonic()
        text = vm.ssh().check_output("cat /proc/uptime", timeout_s=30)
        after = time.monotonic()
        return (before + after) / 2, float(text.split()[0])
    except (VmtestError, ValueError, IndexError):
        return None


def _runner_steps(sysctl: tuple[tuple[str, str], ...], when: str) -> list[onports.Step]:
    """The runner's own steps around a scenario's on the ports: the variant's sysctls
    (set before the scenario starts, read back) and a clock reading."""
    steps = [onports.Step("sysctl", sysctl_mod.write_command(sysctl), timeout_s=60)] \
        if sysctl else []
    return [*steps, onports.Step(f"uptime-{when}", 'read -r up < /proc/uptime; echo "$up"',
                                 timeout_s=30)]


def clock_ratio(start: Reading | None, end: Reading | None) -> float | None:
    """Guest seconds per host second between two (host, guest) readings."""
    if start is None or end is None or end[0] - start[0] < 5:
        return None
    return round((end[1] - start[1]) / (end[0] - start[0]), 3)


def clock_problem(ratio: float | None) -> str | None:
    """Why a run whose guest clock ran at `ratio` x host time is not counted, or None."""
    if ratio is None or abs(ratio - 1) <= CLOCK_TOLERANCE:
        return None
    # The scenario's periods and timeouts ran on the guest's clock: not the experiment
    # that was asked for. What was measured is kept, but not as a result.
    return (f"the guest's clock ran at {ratio:.2f}x host time (TSC calibrated wrong at "
            "boot, see 'tsc: Detected' in dmesg.txt): its periods did not hold, so this "
            "run is not counted\nhint: fewer parallel VMs (--jobs) or a --stagger; "
            "`vmtest matrix --resume` runs it again")


def _keep_partial(doc: dict[str, Any], scenario: Scenario, out_dir: Path) -> None:
    """What an interrupted run measured before it was stopped (Scenario.partial), kept in
    its document under `partial`: not a result (the verdict stays interrupted), but not
    lost either."""
    try:
        partial = scenario.partial(out_dir)
    except Exception:  # the interruption is what the run reports, not this
        log.debug("reading what the interrupted run measured failed", exc_info=True)
        return
    if partial:
        doc["partial"] = {k: v for k, v in partial.items() if k not in ("timings", "artifacts")}


def verdict_for(exc: BaseException) -> tuple[RunVerdict, str]:
    """(verdict, error) of a run that ended with exc: the kernel's fault (its verdict:
    kernel-crash, hang, timeout) or the machinery's (infrastructure)."""
    verdict = RunVerdict.for_exception(exc)
    if isinstance(exc, VmtestError):
        return verdict, exc.render()
    if verdict is RunVerdict.INTERRUPTED:
        signal = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
        return verdict, f"interrupted ({signal}) before the run finished"
    return verdict, f"vmtest failed: {type(exc).__name__}: {exc}"


def new_document(kernel: BuiltKernel, scenario: Scenario, accel: str) -> dict[str, Any]:
    spec = kernel.spec
    return document.new(base=spec.base, variant=spec.variant,
                        patches=[p.name for p in spec.patches], scenario=scenario.name,
                        profile=scenario.profile, parameters=scenario.parameters(),
                        accel=accel, kernel_release=kernel.artifact.release,
                        build_key=kernel.artifact.key, arch=spec.arch)


def boot_options(scenario: Scenario, variant: Variant | None, *, accel: str,
                 boot_timeout_s: float, arch: str = "x86_64") -> boot_mod.BootOptions:
    """How a run boots: the kernel's architecture, the scenario's needs, then the
    variant's machine and kernel parameters (its words after the scenario's)."""
    overrides = dict(scenario.boot_overrides())
    if variant is not None:
        mine = variant.boot_overrides()
        words = (*overrides.get("cmdline_extra", ()), *mine.pop("cmdline_extra", ()))
        overrides |= mine
        if words:
            overrides["cmdline_extra"] = tuple(words)
    return replace(boot_mod.BootOptions(accel=accel, boot_timeout_s=boot_timeout_s,
                                        arch=arch), **overrides)


def run_scenario(kernel: BuiltKernel, scenario: Scenario, out_dir: Path, *,
                 accel: str = "auto", boot_timeout_s: float = 120.0,
                 variant: Variant | None = None,
                 boot: Callable[..., Any] = boot_mod.boot) -> dict[str, Any]:
    """Boot, run, collect; always returns (and writes out_dir/result.json) a document.
    `variant`: the experiment file's, when it boots otherwise than plainly (kernel
    parameters, sysctls set before the scenario starts and read back, machine shape).
    KeyboardInterrupt is re-raised after the document says `interrupted`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = new_document(kernel, scenario, accel)
    if variant is not None:
        doc["identity"]["boot"] = variant.to_dict()
    doc["artifacts"]["console"] = str(out_dir / "console.log")
    started = time.monotonic()
    try:
        scenario.prepare(kernel)  # a build failure here is this run's, recorded below
        opts = boot_options(scenario, variant, accel=accel, boot_timeout_s=boot_timeout_s,
                            arch=kernel.spec.arch)
        sysctl = variant.sysctl if variant is not None else ()
        steps = scenario.guest_steps()
        if steps is not None:  # one script on the ports: no sshd, no network
            steps = [*_runner_steps(sysctl, "start"), *steps, *_runner_steps((), "end")]
            opts = replace(opts, command=onports.command(steps))
        with boot(kernel.artifact.image, opts, out_dir) as vm:
            doc["identity"]["accel"] = vm.spec.accel
            doc["timings"]["boot_s"] = round(vm.boot_s or 0, 3)
            if steps is not None:
                doc["identity"]["channel"] = "ports"
                sections = onports.run(vm, steps, out_dir)
                if sysctl:
                    doc["sysctl"] = guest.check_sysctl(sysctl, sections["sysctl"].text)
                clock_start, clock_end = (sections.reading("uptime-start"),
                                          sections.reading("uptime-end"))
                outcome = scenario.outcome_from(sections, out_dir)
                vm.check()
            else:
                if sysctl:
                    # set before the scenario starts, as the guest reads them back
                    doc["sysctl"] = guest.apply_sysctl(vm, sysctl)
                clock_start = _guest_uptime(vm)
                outcome = scenario.run(vm, out_dir)
                vm.check()
                clock_end = _guest_uptime(vm)
            if (cpu := vm.cpu_seconds()) is not None:
                doc["timings"]["qemu_cpu_s"] = round(cpu, 2)
                doc["timings"]["qemu_wall_s"] = round(time.monotonic() - started, 2)
            # Everything measured is saved: QEMU is told to quit, as `vmtest run -- CMD`
            # does, not the guest asked to power off and waited for.
            vm.shutdown(graceful=False)
        doc.update({k: v for k, v in outcome.items() if k not in ("timings", "artifacts")})
        doc["timings"].update(outcome.get("timings", {}))
        doc["artifacts"].update(outcome.get("artifacts", {}))
        ratio = clock_ratio(clock_start, clock_end)
        doc["timings"]["guest_clock_ratio"] = ratio
        problem = clock_problem(ratio)
        if problem:
            document.fail(doc, RunVerdict.INFRASTRUCTURE, problem)
    except KeyboardInterrupt as exc:
        document.fail(doc, *verdict_for(exc))
        _keep_partial(doc, scenario, out_dir)
        raise  # not a measurement: `--resume` runs it again
    except VmtestError as exc:
        document.fail(doc, *verdict_for(exc))
        log.debug("%s: %s", doc["verdict"], exc)
    except Exception as exc:  # a bug of vmtest's: this run is lost, the others are not
        document.fail(doc, *verdict_for(exc))
        log.error("run in %s failed inside vmtest", out_dir, exc_info=True)
    finally:
        doc["timings"]["total_s"] = round(time.monotonic() - started, 3)
        document.write(doc, out_dir / "result.json")
    return doc
