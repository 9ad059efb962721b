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

from vmtest import arch as archs
from vmtest.collect import guest, ktap
from vmtest.errors import ConfigError, InfraError
from vmtest.kernel.selftest_needs import GuestNeeds, needs_for
from vmtest.scenarios.base import Scenario, ScenarioParams, StallWatch, elapsed_since, guest_run

if TYPE_CHECKING:
    from vmtest.kernel.build import BuiltKernel
    from vmtest.kernel.selftests import SelftestInstall
    from vmtest.qemu.machine import Machine

GUEST_DIR = "/opt/kselftest"
# Emulation is 10-50x slower than a CPU for these tests; 10x keeps run_vmtests.sh's
# hugetlb/userfaultfd runs inside their limit here and a hung test bounded.
TCG_TIMEOUT_SCALE = 10.0
# GNU programs the selftests call with options busybox's lack (rootfs.PROGRAMS says why).
KSELFTEST_PROGRAMS = ("timeout", "tr", "killall", "pgrep")
# Output standing still this long with the guest's vCPUs idle: a stall worth describing
# (a test that sleeps on purpose sleeps less; a slow one keeps QEMU busy).
STALL_S = {"kvm": 120.0, "tcg": 300.0}


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
        self.modules_layer: Path | None = None
        self.kernel_config = ""
        self.needs = GuestNeeds()
        self.setup: dict[str, Any] = {}  # what the guest's set-up gave and did not

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
        arch = kernel.spec.arch if kernel is not None else archs.DEFAULT
        self.layer = rootfs.tree_layer(f"kselftest-{self.install.directory.name}",
                                       self.install.directory, GUEST_DIR,
                                       programs=KSELFTEST_PROGRAMS, arch=arch)
        config = kernel.artifact.config if kernel is not None else None
        self.kernel_config = config.read_text() if config and config.is_file() else ""
        self.needs = needs_for(self.collections())
        modules = kernel.artifact.modules if kernel is not None else None
        if modules is not None and self.needs.modules:
            self.modules_layer = rootfs.tree_layer(
                f"modules-{kernel.artifact.key[:16]}" if kernel else "modules",
                modules / "lib/modules", "/lib/modules", libraries=False)

    def collections(self) -> list[str]:
        return list(dict.fromkeys(t.split(":", 1)[0] for t in self.selected))

    def boot_overrides(self) -> dict[str, Any]:
        if self.layer is None:
            raise InfraError("kselftest scenario was not prepared (no selftests built)")
        # bash: run_vmtests.sh and mem-on-off-test.sh are bash scripts.
        needs = self.needs
        nodes = needs.numa_nodes if needs.numa_nodes > 1 else 0
        memory = max(self.params.memory_mib, needs.memory_mib)
        memory += -memory % max(nodes, 1)  # split evenly over the nodes
        return super().boot_overrides() | {
            "programs": ("bash",),
            "layers": (self.layer, *([self.modules_layer] if self.modules_layer else [])),
            "memory_mib": memory, "cpus": max(self.params.cpus, needs.cpus, nodes),
            "numa_nodes": nodes, "cpu_flags": needs.cpu_flags,
            # memory to hot-add: on arm64 a pc-dimm needs ACPI, so the guest boots
            # through UEFI (qemu/boot.py)
            "acpi_hotplug": bool(needs.offline_memory_mib),
            "cmdline_extra": needs.boot_cmdline(),
            "maxmem_mib": memory + 4 * 1024}  # room for hot-added DIMMs

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
        plan = guest_setup(self.needs, self.kernel_config, self.modules_layer is not None)
        setup_log = run_dir / "guest-setup.log"
        if guest_run(vm, plan.script, setup_log, timeout_s=300) != 0:
            raise InfraError("the guest's set-up for the selftests failed",
                             log_path=setup_log,
                             log_tail=setup_log.read_text(errors="replace")[-1500:])
        given = parse_setup(setup_log.read_text(errors="replace"))
        not_given = dict(plan.not_given) | shortfalls(self.needs, given)
        if self.needs.offline_memory_mib:  # memory-hotplug: memory to online and offline
            guest.hot_add(vm, [(self.needs.offline_memory_mib, None)])
            given["offline_memory_mib"] = self.needs.offline_memory_mib
        self.setup = {"given": given, "not_given": not_given}
        log_path = run_dir / "kselftest.log"
        # A test that sleeps on something (a hang, not a slow test) is described while it
        # hangs: what its tasks wait on, before its timeout kills them.
        # What a test leaves behind holding the runner's output pipe (a script that exits
        # without killing its background writer: 6.12's charge_reserved_hugetlb.sh on a
        # failed expectation) would hang the run until its timeout: it is ended.
        stall = StallWatch(run_dir, after_s=STALL_S.get(vm.spec.accel, STALL_S["tcg"]),
                           reap=("run_kselftest.sh", "kselftest/runner.sh", GUEST_DIR))
        status = guest_run(vm, self.command(vm.spec.accel), log_path,
                           timeout_s=self.time_limit_s(), stall=stall)
        vm.check()
        artifacts = guest.save_logs(vm, run_dir)
        outcome = self.outcome(log_path.read_text(errors="replace"),
                               artifacts["dmesg"].read_text(errors="replace"))
        outcome["metrics"]["runner_status"] = status
        if stall.stalls:
            outcome["stalls"] = stall.stalls
        outcome["timings"] = {"kselftest_s": elapsed_since(started)}
        outcome["artifacts"] = {k: str(v) for k, v in artifacts.items()} | {
            "kselftest_log": str(log_path), "guest_setup_log": str(setup_log)}
        return outcome

    def partial(self, run_dir: Path) -> dict[str, Any] | None:
        """The tests that reported before the run was stopped (the TAP log is written as
        the guest prints it); the others are "missing"."""
        log_path = run_dir / "kselftest.log"
        if not log_path.is_file():
            return None
        return self.outcome(log_path.read_text(errors="replace"), "")

    # -- the pure part -------------------------------------------------------------
    def outcome(self, log_text: str, dmesg_text: str) -> dict[str, Any]:
        results = ktap.parse(log_text)
        ktap.mark_not_built(results)  # a stand-in for a program that did not compile
        reported = {ktap.selftest_id(r.name) for r in results}
        for entry in self.selected:  # asked for, never reported: the runner died
            if entry not in reported:
                results.append(ktap.TestResult(
                    name=entry, status="missing",
                    reason="no result line: the run ended before this test reported"))
        counts = ktap.totals(results)
        missing = self.missing_options()
        flat = ktap.flatten(results)
        tests: dict[str, dict[str, Any]] = {
            path: {"status": r.status, **({"reason": r.reason} if r.reason else {}),
                   **({"planned": r.planned, "ran": len(r.subtests)}
                      if r.plan_mismatch else {})}
            for path, r in flat}
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
                          if self.install else [],
                          "guest": self.setup,
                          # planned N subtests, reported another number
                          "plan_mismatch": [path for path, r in flat if r.plan_mismatch],
                          "skip_reasons": skip_reasons(tests)},
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


def skip_reasons(tests: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many leaf tests skipped for each reason, most first (a runner's own skip
    line stands for its subtests: only leaves count)."""
    parents = {path.rsplit(ktap.SEP, 1)[0] for path in tests if ktap.SEP in path}
    counts: dict[str, int] = {}
    for path, info in tests.items():
        if info["status"] == "skip" and path not in parents:
            reason = info.get("reason") or "(no reason given)"
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclasses.dataclass(frozen=True)
class SetupPlan:
    """The guest's set-up before the tests: a script, and what it cannot give."""

    script: str
    not_given: dict[str, str]  # need -> why vmtest cannot give it


# The set-up script's report lines: "vmtest-setup NAME VALUE".
SETUP_WORD = "vmtest-setup"


def guest_setup(needs: GuestNeeds, kernel_config: str, modules: bool) -> SetupPlan:
    """What to do in the guest for `needs` on a kernel with this .config (empty:
    unknown, everything is tried): swap on zram, cgroup v2 mounted, the modules' index
    checked; then a report of what the guest has (swap, huge pages, NUMA nodes)."""
    have = set(kernel_config.splitlines())

    def lacks(*options: str) -> list[str]:
        return [o for o in options if kernel_config and f"{o}=y" not in have]

    steps: list[tuple[str, str]] = []
    not_given: dict[str, str] = {}
    if needs.swap_mib:
        missing = lacks("CONFIG_SWAP", "CONFIG_ZRAM")
        if missing:
            not_given["swap"] = f"the kernel lacks {', '.join(missing)}"
        else:
            steps.append(("swap", f"echo {needs.swap_mib}M > /sys/block/zram0/disksize && "
                                  "mkswap /dev/zram0 >/dev/null && swapon /dev/zram0"))
    if needs.cgroup2:
        missing = lacks("CONFIG_CGROUPS")
        if missing:
            not_given["cgroup2"] = f"the kernel lacks {', '.join(missing)}"
        else:
            steps.append(("cgroup2", "mount -t cgroup2 none /sys/fs/cgroup"))
    for module in needs.modules:
        if lacks("CONFIG_MODULES") or not modules:
            not_given[f"module {module}"] = "the kernel was built without modules " \
                "(CONFIG_MODULES, kernels/fragments/kselftest-mm.config)"
        else:
            # modprobe finds it through the index depmod wrote (names use - or _)
            pattern = module.replace("-", "[-_]")
            steps.append((f"module {module}",
                          f"grep -q '/{pattern}\\.ko' /lib/modules/$(uname -r)/modules.dep"))
    lines = [f"{{ {command}; }} || {{ echo \"vmtest: set-up failed: {what}\" >&2; exit 1; }}"
             for what, command in steps]
    lines += [
        f"echo {SETUP_WORD} swap_kib $(awk '/^SwapTotal:/ {{print $2}}' /proc/meminfo)",
        f"for d in /sys/kernel/mm/hugepages/hugepages-*; do [ -d $d ] && "
        f"echo {SETUP_WORD} ${{d##*/}} $(cat $d/nr_hugepages); done",
        f"echo {SETUP_WORD} numa_nodes $(ls -d /sys/devices/system/node/node* 2>/dev/null "
        f"| wc -l)",
        f"echo {SETUP_WORD} cpus $(nproc)",
        f"grep -q cgroup2 /proc/mounts && echo {SETUP_WORD} cgroup2 1 || true",
    ]
    return SetupPlan("\n".join(lines) + "\n", not_given)


def parse_setup(text: str) -> dict[str, int]:
    """The set-up script's report: {"swap_kib": 1048572, "hugepages-2048kB": 128, ...}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == SETUP_WORD and words[2].isdigit():
            out[words[1]] = int(words[2])
    return out


def shortfalls(needs: GuestNeeds, given: dict[str, int]) -> dict[str, str]:
    """What the guest has less of than asked (huge pages the memory did not hold, nodes
    the kernel did not bring up)."""
    out = {}
    for what, asked, key in (("1 GiB huge pages", needs.hugepages_1g, "hugepages-1048576kB"),
                             ("2 MiB huge pages", needs.hugepages_2m, "hugepages-2048kB"),
                             ("NUMA nodes", needs.numa_nodes, "numa_nodes")):
        if asked > 1 or (asked and key != "numa_nodes"):
            got = given.get(key, 0)
            if got < asked:
                out[what] = f"{got} of {asked} (the kernel or the memory did not give more)"
    if needs.swap_mib and not given.get("swap_kib"):
        out.setdefault("swap", "no swap active after swapon")
    return out


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
