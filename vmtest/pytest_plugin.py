"""pytest plugin (entry point `pytest11: vmtest`): kernel tests that run in a real guest.

    def test_offline_a_hot_added_block(vm):
        blocks = vm.hotplug(256)
        vm.set_state(blocks, "online_movable")
        assert vm.offline(blocks[0])

`vm` is a booted guest (one per module by default: --vmtest-scope), as of the kernel the
options name: --vmtest-kernel PATH (a built image), --vmtest-source SOURCE (built with the
default fragments), or --vmtest-config YAML with --vmtest-base and --vmtest-variant
(default: the built-in reference experiment, its first kernel and variant). Several
--vmtest-variant options, or @pytest.mark.vmtest_variants("patched", "unpatched"), run a
test once per variant (ids: the variant names). --vmtest-numa N gives the guest N NUMA
nodes (`vmtest run --numa`'s option; a kernel whose config lacks CONFIG_NUMA is refused,
and a guest that boots with fewer nodes fails its tests). --vmtest-virtio-mem SIZE gives
the guest a virtio-mem device of up to SIZE, empty at boot, which `vm.resize_memory(MIB)`
grows and shrinks (a kernel whose config lacks CONFIG_VIRTIO_MEM is refused: on x86_64
build it with the fragment virtio-mem).

A kernel splat (WARNING, BUG, Oops, KASAN, ...) in the guest's log while a test runs fails
that test unless it is marked @pytest.mark.vmtest_expect_splat; a failed test's report
carries the guest's log since the test started and the console's last lines. With
pytest-xdist every worker boots its own guests.

`vm.record("fault_ms", 12.5)` keeps a number a test measured: in the test's
user_properties (JUnit XML properties with --junitxml), and, when the tests run as a
scenario of an experiment file (vmtest/scenarios/pytest_scenario.py), as a metric of the
matrix and of bisect. There the session's `vm` is the guest vmtest booted for the run
(vmtest/scenarios/pytest_scenario.py `Attachment`), not one the fixture boots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from vmtest import arch as archs
from vmtest.collect import dmesg as dmesg_parser
from vmtest.collect import guest as collect_guest
from vmtest.errors import ConfigError, InfraError, VmtestError
from vmtest.guest import memory
from vmtest.kernel import build as kbuild
from vmtest.kernel import images
from vmtest.kernel_choice import KernelChoice, add_pytest_options, check_numa, check_virtio_mem
from vmtest.qemu import boot
from vmtest.qemu.machine import Machine
from vmtest.scenarios.pytest_scenario import Attachment

log = logging.getLogger(__name__)

Scope = Literal["session", "package", "module", "class", "function"]
SCOPES: tuple[Scope, ...] = ("session", "package", "module", "class", "function")
CMA_DEBUGFS = memory.CMA_DEBUGFS


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vmtest", "kernel tests in a QEMU guest (vmtest)")
    # The kernel and machine options of `vmtest run`, as --vmtest-NAME (--vmtest-variant
    # repeats: each test runs on each variant named).
    add_pytest_options(group)
    group.addoption("--vmtest-scope", choices=SCOPES, default="module",
                    help="how long one guest lives (default: module)")
    group.addoption("--vmtest-kselftest-dir", metavar="DIR",
                    help="a kselftest install for vm.kselftest() (default: built from the "
                         "kernel's tree)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vmtest_variants(*names): run this test on each of "
                                       "these variants of the configured kernel")
    config.addinivalue_line("markers", "vmtest_expect_splat: a kernel splat during this test "
                                       "is expected (and its absence fails it)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "vm" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("vmtest_variants")
    variants = list(marker.args) if marker else metafunc.config.getoption("vmtest_variant")
    if len(variants) > 1 or marker:
        metafunc.parametrize("vmtest_variant", variants, ids=variants, indirect=True,
                             scope=metafunc.config.getoption("vmtest_scope"))


@dataclasses.dataclass(frozen=True)
class Result:
    status: int
    stdout: str
    stderr: str

    def check(self) -> Result:
        """self, or an AssertionError that shows the command's output."""
        if self.status != 0:
            raise AssertionError(f"guest command exited {self.status}\n--- stdout ---\n"
                                 f"{self.stdout}--- stderr ---\n{self.stderr}")
        return self


@dataclasses.dataclass(frozen=True)
class KselftestRun:
    """What vm.kselftest() returns: per test and subtest (paths like
    'mm:run_vmtests.sh::hugepage-mmap') its status and, if it did not pass, why."""

    tests: dict[str, dict[str, Any]]
    totals: dict[str, int]
    log: str
    config_missing: dict[str, list[str]]

    def status(self, test: str) -> str:
        return str(self.tests[test]["status"])

    @property
    def failed(self) -> list[str]:
        """Tests that failed, timed out or never reported (a leaf, or a runner that
        failed outside its subtests)."""
        bad = {"fail", "timeout", "missing"}
        return [t for t, info in self.tests.items() if info["status"] in bad
                and not any(o.startswith(t + "::") and self.tests[o]["status"] in bad
                            for o in self.tests)]

    @property
    def skipped(self) -> dict[str, str]:
        return {t: str(info.get("reason", "")) for t, info in self.tests.items()
                if info["status"] == "skip"}


class Guest:
    """A booted guest for tests: commands, its log since the test began, memory hotplug
    and CMA helpers, the kernel's own selftests. Boots again if an earlier test crashed
    it."""

    def __init__(self, image: Path, variant: str, opts: boot.BootOptions, run_dir: Path,
                 built: kbuild.BuiltKernel | None = None,
                 kselftest_dir: str | None = None,
                 boot_fn: Callable[..., contextlib.AbstractContextManager[Machine]]
                 = boot.boot, machine: Machine | None = None) -> None:
        self.image = image
        self._boot_fn = boot_fn  # tests boot fake machines
        # Why the guest is not to be used again ('' while it is): a command of an earlier
        # test crashed it, hung or lost its connection.
        self.suspect = ""
        self.built = built
        self.kselftest_dir = kselftest_dir
        self._layers_in: set[Path] = set()
        self.variant = variant
        self.opts = opts
        self.run_dir = run_dir
        self._stack = contextlib.ExitStack()
        self._boots = 0
        self._mark = 0
        # The test running now (the vm fixture sets it): where record() puts values.
        self.item: pytest.Item | None = None
        # A machine handed in (a pytest scenario's run) is not ours to boot again.
        self.attached = machine is not None
        self.machine: Machine = machine if machine is not None else self._boot()

    def _boot(self) -> Machine:
        if self.attached:
            raise InfraError("the guest of this run is not fit for the next test "
                             f"({self.suspect or self.machine.unusable()}), and a pytest "
                             "scenario's run does not boot another",
                             hint="the run's verdict says what happened to the guest")
        self._boots += 1
        out = self.run_dir / f"boot{self._boots}"
        self.machine = self._stack.enter_context(self._boot_fn(self.image, self.opts, out))
        self._mark = 0
        self._layers_in = set()
        self.suspect = ""
        if self.opts.numa_nodes > 1:
            try:
                self._check_numa_nodes()
            except BaseException:
                self._stack.close()  # no test gets this guest, and no teardown stops it
                raise
        return self.machine

    def _check_numa_nodes(self) -> None:
        """The guest has the NUMA nodes asked for: a kernel without NUMA, or without
        ACPI NUMA (x86's X86_64_ACPI_NUMA reads QEMU's SRAT), boots one, which no config
        beside an image may have said (kernel_choice.check_numa)."""
        text = self.run("ls -d /sys/devices/system/node/node* 2>/dev/null | wc -l",
                        timeout_s=60).stdout.strip()
        nodes = int(text) if text.isdigit() else 0
        if nodes < self.opts.numa_nodes:
            raise ConfigError(f"--vmtest-numa {self.opts.numa_nodes}: the guest of {self.image} "
                              f"booted with {nodes} NUMA node(s)",
                              hint="build the kernel with the fragment numa (CONFIG_NUMA; on "
                                   "x86 CONFIG_X86_64_ACPI_NUMA)")

    @property
    def boots(self) -> int:
        return self._boots

    def reboot(self, why: str) -> None:
        """A fresh guest in place of this one, which is stopped at once (no poweroff
        round trip to a guest that may be mid-panic)."""
        log.info("booting a fresh guest: %s", why)
        self.machine.shutdown(graceful=False)
        self._stack.close()
        self._stack = contextlib.ExitStack()
        self._boot()

    def ensure_alive(self) -> None:
        """Boot again if the guest is not fit for the next test: an earlier command
        failed with it (crash, hang, lost connection: the suspect mark, set before the
        failing test ends, so no race with a panic still in flight), or QEMU, the
        console or SSH says so now."""
        why = self.suspect or self.machine.unusable()
        if why:
            self.reboot(why)

    def begin_test(self) -> None:
        """ensure_alive, then mark the log. The mark's `dmesg` is itself a probe: a guest
        that went down between tests without a sign yet (a crash a background command
        set off) fails it, and the test gets a fresh guest."""
        self.ensure_alive()
        try:
            self.mark()
        except VmtestError as exc:
            self.reboot(f"the guest failed between tests: {exc}")
            self.mark()

    def close(self) -> None:
        self._stack.close()

    # -- values a test measured --------------------------------------------------------
    def record(self, name: str, value: float) -> None:
        """Keep a number this test measured under name (the test's user_properties;
        a pytest scenario's metric `from: record, key: NAME`). Recorded twice: both
        are kept, in order (the metric's reduce: picks)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"vm.record: the name must be a non-empty string, not {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or value != value or value in (float("inf"), float("-inf")):
            raise TypeError(f"vm.record({name!r}, ...): the value must be a finite number, "
                            f"not {value!r}")
        if self.item is None:
            raise RuntimeError("vm.record() is for use inside a test that takes `vm`")
        self.item.user_properties.append((name, value))

    # -- commands ------------------------------------------------------------------
    def run(self, command: str, *, timeout_s: float | None = 300, check: bool = False,
            input: bytes | None = None) -> Result:  # noqa: A002 - subprocess's name
        """Run a shell command line in the guest (in /root); its status and output."""
        out, err = io.BytesIO(), io.BytesIO()
        with contextlib.ExitStack() as stack:
            fd = None
            if input is not None:
                fd = stack.enter_context(_pipe_with(input))
            try:
                status = self.machine.ssh().run(command, stdout=out, stderr=err,
                                                timeout_s=timeout_s, watch=self.machine.check,
                                                stdin=fd)
            except VmtestError as exc:
                self.suspect = f"a command of an earlier test failed: {exc}"
                raise
        result = Result(status, out.getvalue().decode(errors="replace"),
                        err.getvalue().decode(errors="replace"))
        return result.check() if check else result

    # -- the kernel's own selftests -----------------------------------------------
    def kselftest(self, tests: str = "mm", *, timeout_s: int = 0) -> KselftestRun:
        """Run the kernel's selftests (`COLL[:TEST] ...`, as `vmtest run --kselftest`)
        with kselftest's runner, built from the kernel's tree on first use and unpacked
        into this guest; per-test timeouts from `settings` (x10 under TCG) or
        timeout_s."""
        from vmtest.scenarios.kselftest import Kselftest

        params: dict[str, Any] = {"tests": tests, "timeout_s": timeout_s}
        if self.kselftest_dir:
            params["install_dir"] = str(Path(self.kselftest_dir).resolve())
        elif self.built is None:
            raise pytest.UsageError("vm.kselftest() builds the selftests of the kernel's "
                                    "tree, which --vmtest-kernel does not name: use "
                                    "--vmtest-source/--vmtest-config or "
                                    "--vmtest-kselftest-dir")
        sc = Kselftest(Kselftest.params_for("quick", params), "quick")
        sc.prepare(self.built)
        layer = sc.boot_overrides()["layers"][0]
        if layer not in self._layers_in:  # unpack the install and its libraries
            with layer.open("rb") as archive:
                status = self.machine.ssh().run("cd / && cpio -idmu 2>/dev/null",
                                                stdin=archive.fileno(), timeout_s=120)
            if status != 0:
                raise InfraError(f"unpacking the selftests in the guest failed ({status})")
            self._layers_in.add(layer)
        result = self.run(sc.command(self.machine.spec.accel), timeout_s=sc.time_limit_s())
        outcome = sc.outcome(result.stdout, dmesg_text="")
        return KselftestRun(tests=outcome["tests"],
                            totals={k[6:]: v for k, v in outcome["metrics"].items()},
                            log=result.stdout, config_missing=outcome["kselftest"][
                                "config_missing"])

    # -- the kernel's log ------------------------------------------------------------
    def mark(self) -> None:
        """From here on, dmesg() reports what the kernel logs."""
        self._mark = len(self._dmesg_text())

    def _dmesg_text(self) -> str:
        return self.run("dmesg", timeout_s=120, check=True).stdout

    def dmesg_delta(self) -> str:
        return self._dmesg_text()[self._mark:]

    def dmesg(self) -> dmesg_parser.DmesgReport:
        """The kernel's log since the test began, parsed: splats, dump_page()s, the
        instrumentation's per-operation summaries (report.op_summary())."""
        return dmesg_parser.parse(self.dmesg_delta())

    # -- memory hotplug ------------------------------------------------------------
    def hotplug(self, size_mib: int = 2 * memory.BLOCK_MIB, timeout_s: float = 30) -> list[str]:
        """Hot-add a pc-dimm; returns its memory blocks once the guest has them (offline)."""
        _, blocks = collect_guest.hot_add(self.machine, [(size_mib, None)], timeout_s)
        return blocks

    def offline_blocks(self) -> set[str]:
        return collect_guest.offline_blocks(self.machine)

    def set_state(self, blocks: list[str], state: str) -> None:
        self.run(memory.set_state_command(blocks, state), check=True)

    def offline(self, block: str, timeout_s: float = 30) -> bool:
        """Offline one block within timeout_s; True if it went offline."""
        out = self.run(memory.offline_command(block, timeout_s), timeout_s=timeout_s + 30)
        return memory.parse_offline_result(out.stdout).get("state") == "offline"

    def resize_memory(self, size_mib: int, timeout_s: float = 120) -> int:
        """Resize the guest's virtio-mem device (--vmtest-virtio-mem) to size_mib and wait
        until the guest's driver has plugged or unplugged that much, or timeout_s has
        passed; returns the size it reached (MiB). Memory it adds comes offline: online
        it with set_state(). The guest's driver retries a shrink it could not finish only
        after 50 s: asked again each 10 s the size stands still."""
        from vmtest.qemu import virtio_mem

        if not self.opts.virtio_mem_mib and not self.attached:
            raise pytest.UsageError("vm.resize_memory() needs a virtio-mem device: "
                                    "--vmtest-virtio-mem SIZE")
        try:
            return virtio_mem.resize(self.machine, size_mib, timeout_s, stall_s=10).reached_mib
        except VmtestError as exc:
            self.suspect = f"a virtio-mem resize of an earlier test failed: {exc}"
            raise

    # -- CMA -----------------------------------------------------------------------
    def cma_area(self) -> str:
        return collect_guest.cma_area(self.machine)

    def cma_alloc(self, pages: int) -> bool:
        """Allocate pages from the CMA area through debugfs; True if it succeeded."""
        return self.run(f"echo {int(pages)} > {CMA_DEBUGFS}/{self.cma_area()}/alloc").status == 0

    def cma_free(self, pages: int) -> None:
        self.run(f"echo {int(pages)} > {CMA_DEBUGFS}/{self.cma_area()}/free", check=True)


@contextlib.contextmanager
def _pipe_with(data: bytes) -> Iterator[int]:
    """A readable descriptor that yields data, then end of file (a file: no pipe limit)."""
    with tempfile.TemporaryFile() as tmp:
        tmp.write(data)
        tmp.seek(0)
        yield tmp.fileno()


def _image(config_: pytest.Config,
           variant: str | None) -> tuple[Path, str, kbuild.BuiltKernel | None]:
    """The kernel image to boot, the variant's name, and the build (None for an image
    the user names: vmtest does not know its tree). The rule is `vmtest run`'s
    (vmtest/kernel_choice.py); `variant` is this test's."""
    choice = dataclasses.replace(
        KernelChoice.from_options(lambda name: config_.getoption(f"vmtest_{name}"),
                                  spelling=lambda name: f"--vmtest-{name}"),
        variant=variant)
    try:
        image = choice.image_path()
    except VmtestError as exc:
        raise pytest.UsageError(exc.render()) from exc
    if image is not None:
        assert choice.kernel is not None
        return image, variant or choice.kernel.name, None
    built = choice.built()
    return built.artifact.image, built.spec.variant, built


def with_numa(opts: boot.BootOptions, numa_nodes: int) -> boot.BootOptions:
    """opts for --vmtest-numa N: N nodes, each with a vCPU (vmtest's rule: at most one
    node per vCPU) and an equal share of the memory (QEMU's node backends add up to -m),
    so that every N the option takes boots; opts as they are for 0 and 1."""
    if numa_nodes <= 1:
        return opts
    return dataclasses.replace(opts, numa_nodes=numa_nodes, cpus=max(opts.cpus, numa_nodes),
                               memory_mib=opts.memory_mib - opts.memory_mib % numa_nodes)


def _scope(fixture_name: str, config: pytest.Config) -> Scope:
    chosen = config.getoption("vmtest_scope")
    return next(s for s in SCOPES if s == chosen)


@pytest.fixture(scope=_scope)
def vmtest_variant(request: pytest.FixtureRequest) -> str | None:
    """The variant this test runs on (parametrized by --vmtest-variant / vmtest_variants)."""
    if hasattr(request, "param"):
        return str(request.param)
    chosen = request.config.getoption("vmtest_variant")
    return chosen[0] if chosen else None


@pytest.fixture(scope=_scope)
def vmtest_guest(request: pytest.FixtureRequest, vmtest_variant: str | None,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """The booted guest behind `vm` (lives for --vmtest-scope); in a pytest scenario's
    session, the run's guest."""
    attached = [p for p in request.config.pluginmanager.get_plugins()
                if isinstance(p, Attachment)]
    if attached:
        if attached[0].guest is None:
            attached[0].guest = Guest(Path(), attached[0].variant, boot.BootOptions(),
                                      attached[0].run_dir, machine=attached[0].machine)
        yield attached[0].guest
        return
    try:
        image, name, built = _image(request.config, vmtest_variant)
        nodes = request.config.getoption("vmtest_numa")
        check_numa(nodes, image, spelling=lambda flag: f"--vmtest-{flag}")
        virtio_mem_mib = request.config.getoption("vmtest_virtio_mem")
        check_virtio_mem(virtio_mem_mib, image, spelling=lambda flag: f"--vmtest-{flag}")
        opts = with_numa(boot.BootOptions(accel=request.config.getoption("vmtest_accel"),
                                          programs=("bash",), boot_timeout_s=120,
                                          arch=images.arch_of(image) or archs.DEFAULT),
                         nodes)
        opts = boot.with_virtio_mem(opts, virtio_mem_mib)
        guest = Guest(image, name, opts, tmp_path_factory.mktemp(f"vmtest-{name}"), built,
                      request.config.getoption("vmtest_kselftest_dir"))
    except VmtestError as exc:
        failure = exc.render()
    else:
        failure = ""
    if failure:  # outside the except: the report says it once, without the chained error
        pytest.fail(f"vmtest could not boot the guest: {failure}", pytrace=False)
    try:
        yield guest
    finally:
        guest.close()


@pytest.fixture
def vm(vmtest_guest: Guest, request: pytest.FixtureRequest) -> Iterator[Guest]:
    """A booted guest; dmesg() reports what the kernel logs from this test on."""
    vmtest_guest.begin_test()
    vmtest_guest.item = request.node
    try:
        yield vmtest_guest
    finally:
        vmtest_guest.item = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    guest = getattr(item, "funcargs", {}).get("vm")
    if report.when != "call" or not isinstance(guest, Guest):
        return
    try:
        delta = guest.dmesg_delta()
    except VmtestError as exc:  # the guest died during the test
        delta = ""
        if report.passed:
            report.outcome = "failed"
            report.longrepr = f"the guest failed during the test: {exc}"
    splats = dmesg_parser.parse(delta).splats if delta else []
    expected = item.get_closest_marker("vmtest_expect_splat") is not None
    if report.passed and splats and not expected:
        report.outcome = "failed"
        report.longrepr = "kernel splat during the test:\n" + "\n".join(
            f"  {s.kind}: {s.title}" + (f" [{s.stack[0]}]" if s.stack else "") for s in splats)
    elif report.passed and expected and not splats:
        report.outcome = "failed"
        report.longrepr = "the test expected a kernel splat and none came"
    if report.failed:
        _attach(report, "vmtest: kernel log since the test began", delta[-20000:])
        with contextlib.suppress(Exception):
            _attach(report, "vmtest: console tail", guest.machine.console.tail(40))


def _attach(report: pytest.TestReport, title: str, text: str) -> None:
    """Add a section to the failure itself, not to report.sections: --junitxml writes the
    failure's text into <failure> always, but report.sections only when their name starts
    with "Captured stdout" (or log, stderr) and junit_logging asks for them."""
    longrepr = report.longrepr
    addsection = getattr(longrepr, "addsection", None)  # a traceback (ExceptionRepr)
    if callable(addsection):
        addsection(title, text)
    elif longrepr is None or isinstance(longrepr, str):
        report.longrepr = f"{longrepr or ''}\n{f' {title} '.center(80, '-')}\n{text}"
    else:
        report.sections.append((title, text))
