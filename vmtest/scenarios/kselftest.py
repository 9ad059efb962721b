"""kselftest: the kernel's own selftests (mm, memory-hotplug) of the tree the kernel was
built from, run in the guest by the tree's own runner (run_kselftest.sh: per-test
timeouts from each collection's `settings`, exit 4 = skip, TAP out) and read back as one
result per test and subtest (vmtest/collect/ktap.py).

Timeouts: a collection's `settings` says how long a test may take on real hardware; under
TCG every instruction is emulated, so they are scaled (TCG_TIMEOUT_SCALE, or the
`timeout_scale` parameter), or replaced by `timeout_s`. The runner's output says which.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest.collect import guest, ktap
from vmtest.errors import ConfigError, InfraError
from vmtest.scenarios.base import Scenario, ScenarioParams, elapsed_since, guest_run

if TYPE_CHECKING:
    from vmtest.kernel.build import BuiltKernel
    from vmtest.kernel.selftests import SelftestInstall
    from vmtest.qemu.machine import Machine

GUEST_DIR = "/opt/kselftest"
# Emulation is 10-50x slower than a CPU for these tests; 10x keeps run_vmtests.sh's
# hugetlb/userfaultfd runs inside their limit here and a hung test bounded.
TCG_TIMEOUT_SCALE = 10.0


@dataclasses.dataclass(frozen=True)
class KselftestParams(ScenarioParams):
    # COLLECTION[:TEST] words, as run_kselftest.sh -c/-t name them; "mm" is "vm" on
    # trees before 6.3.
    tests: str = "mm"
    timeout_s: int = 0  # per test; 0: the collection's settings x the scale
    timeout_scale: float = 0.0  # 0: 1 under KVM, TCG_TIMEOUT_SCALE under TCG
    # The selftests allocate hugetlb pages and userfaultfd areas, and mremap_test maps
    # 2 GiB regions (with 2 GiB they fail "Cannot allocate memory"): more room than the
    # migration scenarios. Guest RAM is only touched as it is used.
    memory_mib: int = 4096
    cma_mib: int = 64
    # Prebuilt install (kselftest INSTALL_PATH) instead of building from the tree.
    install_dir: str = ""


class Kselftest(Scenario):
    name = "kselftest"
    Params = KselftestParams
    PROFILES = {"quick": {}, "seed": {}}
    PROGRESS_METRICS = ("tests_fail",)
    METRICS = tuple(f"tests_{status}" for status in ktap.STATUSES)

    def __init__(self, params: Any, profile: str = "") -> None:
        super().__init__(params, profile)
        self.install: SelftestInstall | None = None
        self.selected: list[str] = []
        self.layer: Path | None = None
        self.kernel_config = ""

    @classmethod
    def validate(cls, p: KselftestParams) -> None:
        if not p.tests.replace(",", " ").split():
            raise ConfigError("kselftest: tests is empty", hint="e.g. tests: mm")
        for word in p.tests.replace(",", " ").split():
            if not all(c.isalnum() or c in "-_.:+" for c in word) or word.count(":") > 1:
                raise ConfigError(f"kselftest: {word!r} is not COLLECTION[:TEST]",
                                  hint="e.g. mm, mm:run_vmtests.sh, memory-hotplug")
        if p.timeout_s < 0 or p.timeout_scale < 0:
            raise ConfigError("kselftest: timeout_s and timeout_scale must be >= 0")

    # -- before boot ---------------------------------------------------------------
    def prepare(self, kernel: BuiltKernel | None) -> None:
        """Build (or find) the selftests of kernel's tree and their guest layer (None:
        a kernel vmtest did not build, with the install_dir parameter)."""
        from vmtest.guest import rootfs
        from vmtest.kernel import selftests

        p: KselftestParams = self.params
        if self.install is not None:  # prepared already (the CLI does it before run.py)
            return
        if p.install_dir:
            self.install = selftests.require_install(Path(p.install_dir))
        elif kernel is not None:
            self.install = selftests.build_selftests(kernel, p.tests)
        else:
            raise ConfigError("kselftest: no kernel tree to build the selftests from",
                              hint="give install_dir (a kselftest install)")
        self.selected = self.install.select(p.tests)
        self.layer = rootfs.tree_layer(f"kselftest-{self.install.directory.name}",
                                       self.install.directory, GUEST_DIR,
                                       programs=("timeout", "tr"))
        config = kernel.artifact.config if kernel is not None else None
        self.kernel_config = config.read_text() if config and config.is_file() else ""

    def boot_overrides(self) -> dict[str, Any]:
        if self.layer is None:
            raise InfraError("kselftest scenario was not prepared (no selftests built)")
        # bash: run_vmtests.sh and mem-on-off-test.sh are bash scripts.
        return super().boot_overrides() | {
            "programs": ("bash",), "layers": (self.layer,),
            "maxmem_mib": self.params.memory_mib + 4 * 1024}  # room for hot-added DIMMs

    def time_limit_s(self) -> float:
        """Every selected test at its full timeout, plus boot and collection."""
        if self.install is None:
            return 3600.0
        return 300.0 + sum(self.timeouts(TCG_TIMEOUT_SCALE)[t.split(":", 1)[0]]
                           for t in self.selected)

    def timeouts(self, scale: float) -> dict[str, int]:
        """Per collection, the per-test timeout this run uses."""
        assert self.install is not None
        p: KselftestParams = self.params
        return {coll: p.timeout_s or math.ceil(self.install.timeout_s(coll) * scale)
                for coll in dict.fromkeys(t.split(":", 1)[0] for t in self.selected)}

    def missing_options(self) -> dict[str, list[str]]:
        """Per collection, the options its `config` asks for that the kernel lacks."""
        assert self.install is not None
        have = set(self.kernel_config.splitlines())
        out = {}
        for coll in dict.fromkeys(t.split(":", 1)[0] for t in self.selected):
            missing = [opt for opt in self.install.wanted_options(coll)
                       if opt not in have and opt.replace("=m", "=y") not in have]
            if missing:
                out[coll] = missing
        return out

    # -- the guest part ------------------------------------------------------------
    def command(self, accel: str) -> str:
        """The guest command: write the timeouts this run uses into each collection's
        settings (the runner reads them), then run the selected tests."""
        p: KselftestParams = self.params
        scale = p.timeout_scale or (TCG_TIMEOUT_SCALE if accel == "tcg" else 1.0)
        steps = [f"cd {GUEST_DIR}"]
        for coll, seconds in self.timeouts(scale).items():
            steps.append(f"echo timeout={seconds} > {shlex.quote(coll)}/settings")
            steps.append(f"echo '# vmtest: {coll} per-test timeout {seconds} s'")
        assert self.install is not None
        in_list = set(self.install.tests())
        listed = [t for t in self.selected if t in in_list]
        runs = []
        if listed:
            runs.append("./run_kselftest.sh " + " ".join(f"-t {shlex.quote(t)}"
                                                         for t in listed))
        # A program the list does not name: kselftest's runner.sh run_many, as the
        # collection's own `make run_tests` calls it (same timeouts, skips, TAP).
        by_coll: dict[str, list[str]] = {}
        for t in self.selected:
            if t not in listed:
                coll, _, prog = t.partition(":")
                by_coll.setdefault(coll, []).append(prog)
        for coll, progs in by_coll.items():
            runs.append(f"(cd {shlex.quote(coll)} && BASE_DIR={GUEST_DIR} && "
                        f". ../kselftest/runner.sh && run_many "
                        + " ".join(shlex.quote("./" + prog) for prog in progs) + ")")
        # Every part runs even when one before it failed; the status is the last's.
        return " && ".join(steps) + " && { " + "; ".join(runs) + "; }"

    def run(self, vm: Machine, run_dir: Path) -> dict[str, Any]:
        started = time.monotonic()
        log_path = run_dir / "kselftest.log"
        status = guest_run(vm, self.command(vm.spec.accel), log_path,
                           timeout_s=self.time_limit_s())
        vm.check()
        artifacts = guest.save_logs(vm, run_dir)
        outcome = self.outcome(log_path.read_text(errors="replace"),
                               artifacts["dmesg"].read_text(errors="replace"))
        outcome["metrics"]["runner_status"] = status
        outcome["timings"] = {"kselftest_s": elapsed_since(started)}
        outcome["artifacts"] = {k: str(v) for k, v in artifacts.items()} | {
            "kselftest_log": str(log_path)}
        return outcome

    # -- the pure part -------------------------------------------------------------
    def outcome(self, log_text: str, dmesg_text: str) -> dict[str, Any]:
        results = ktap.parse(log_text)
        reported = {ktap.selftest_id(r.name) for r in results}
        for entry in self.selected:  # asked for, never reported: the runner died
            if entry not in reported:
                results.append(ktap.TestResult(
                    name=entry, status="missing",
                    reason="no result line: the run ended before this test reported"))
        counts = ktap.totals(results)
        missing = self.missing_options()
        tests: dict[str, dict[str, Any]] = {
            path: {"status": r.status, **({"reason": r.reason} if r.reason else {})}
            for path, r in ktap.flatten(results)}
        for path, info in tests.items():  # the kernel options behind a skip, when known
            coll = path.split(":", 1)[0]
            if info["status"] == "skip":
                related = related_options(path + " " + info.get("reason", ""),
                                          missing.get(coll, []))
                if related:
                    info["config_missing"] = related
        # imported here: its ~100 patterns compile at import, which every `vmtest run`
        # would pay before QEMU starts when the config names this scenario
        from vmtest.collect import dmesg as dmesg_parser

        report = dmesg_parser.parse(dmesg_text)
        splats = report.to_dict()
        return {
            "metrics": {f"tests_{k}": v for k, v in counts.items()},
            "tests": tests,
            "kselftest": {"selected": self.selected, "results": [r.to_dict() for r in results],
                          "config_missing": missing,
                          "build_failures": self.install.build_failures()
                          if self.install else []},
            "loss": splats["loss"],
            "splats": splats["splats"],
        }

    @classmethod
    def headline(cls, comparisons: list[dict[str, Any]], docs: list[dict[str, Any]],
                 baseline: str, candidate: str) -> str:
        def fails(variant: str) -> str:
            mine = [d for d in docs if d.get("identity", {}).get("variant") == variant
                    and d.get("verdict") == "ok"]
            values = sorted(d.get("metrics", {}).get("tests_fail", 0) for d in mine)
            return "n/a" if not values else str(values[len(values) // 2])

        return (f"kselftest failures (median per run): {baseline} {fails(baseline)} -> "
                f"{candidate} {fails(candidate)}")


def related_options(text: str, options: list[str]) -> list[str]:
    """The missing options a skipped test's name or reason points at: the option itself
    ("CONFIG_TEST_HMM=m"), or its name without CONFIG_ as a word of the text
    ("test_hmm.sh", "test_vmalloc module")."""
    lowered = text.lower().replace("-", "_")
    out = []
    for option in options:
        name = option.split("=", 1)[0]
        short = name.removeprefix("CONFIG_").lower()
        if name in text or re.search(rf"(?<![a-z0-9]){re.escape(short)}(?![a-z0-9])", lowered):
            out.append(option)
    return out
