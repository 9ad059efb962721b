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
test once per variant (ids: the variant names).

A kernel splat (WARNING, BUG, Oops, KASAN, ...) in the guest's log while a test runs fails
that test unless it is marked @pytest.mark.vmtest_expect_splat; a failed test's report
carries the guest's log since the test started and the console's last lines. With
pytest-xdist every worker boots its own guests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from vmtest import arch as archs
from vmtest import config, paths
from vmtest.collect import dmesg as dmesg_parser
from vmtest.deadline import Deadline
from vmtest.errors import InfraError, VmtestError
from vmtest.guest import memory
from vmtest.kernel import build as kbuild
from vmtest.kernel import images
from vmtest.qemu import boot
from vmtest.qemu.accel import ACCELS
from vmtest.qemu.machine import Machine

Scope = Literal["session", "package", "module", "class", "function"]
SCOPES: tuple[Scope, ...] = ("session", "package", "module", "class", "function")
CMA_DEBUGFS = "/sys/kernel/debug/cma"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vmtest", "kernel tests in a QEMU guest (vmtest)")
    group.addoption("--vmtest-kernel", metavar="PATH",
                    help="boot this vmlinux, bzImage or `vmtest build` directory")
    group.addoption("--vmtest-source", metavar="SOURCE",
                    help="build this source (debian:6.1, PATH, PATH@REF) with the default "
                         "fragments")
    group.addoption("--vmtest-config", metavar="YAML",
                    help="experiment whose kernels to use (default: the built-in reference)")
    group.addoption("--vmtest-base", metavar="NAME", help="kernel of the config (default: "
                                                          "its first)")
    group.addoption("--vmtest-variant", action="append", default=[], metavar="NAME",
                    help="variant (repeatable: each test runs on each; default: the first)")
    group.addoption("--vmtest-accel", choices=ACCELS, default="auto")
    group.addoption("--vmtest-arch", default=None, metavar="NAME",
                    help="guest architecture: x86_64 or arm64 (default: the kernel's)")
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
                 kselftest_dir: str | None = None) -> None:
        self.image = image
        self.built = built
        self.kselftest_dir = kselftest_dir
        self._layers_in: set[Path] = set()
        self.variant = variant
        self.opts = opts
        self.run_dir = run_dir
        self._stack = contextlib.ExitStack()
        self._boots = 0
        self._mark = 0
        self.machine: Machine = self._boot()

    def _boot(self) -> Machine:
        self._boots += 1
        out = self.run_dir / f"boot{self._boots}"
        self.machine = self._stack.enter_context(boot.boot(self.image, self.opts, out))
        self._mark = 0
        self._layers_in = set()
        return self.machine

    def ensure_alive(self) -> None:
        if self.machine.exited():
            self._stack.close()
            self._stack = contextlib.ExitStack()
            self._boot()

    def close(self) -> None:
        self._stack.close()

    # -- commands ------------------------------------------------------------------
    def run(self, command: str, *, timeout_s: float | None = 300, check: bool = False,
            input: bytes | None = None) -> Result:  # noqa: A002 - subprocess's name
        """Run a shell command line in the guest (in /root); its status and output."""
        out, err = io.BytesIO(), io.BytesIO()
        with contextlib.ExitStack() as stack:
            fd = None
            if input is not None:
                fd = stack.enter_context(_pipe_with(input))
            status = self.machine.ssh().run(command, stdout=out, stderr=err,
                                            timeout_s=timeout_s, watch=self.machine.check,
                                            stdin=fd)
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
        before = self.offline_blocks()
        self.machine.hotplug_dimm(size_mib)
        expect = size_mib // memory.BLOCK_MIB
        deadline = Deadline(timeout_s)
        while True:
            new = sorted(self.offline_blocks() - before, key=memory.block_start_pfn)
            if len(new) >= expect:
                return new
            if deadline.expired:
                raise InfraError(f"the hot-added {size_mib} MiB did not appear in the guest "
                                 f"({len(new)} of {expect} blocks after {timeout_s:.0f} s)")
            time.sleep(0.2)

    def offline_blocks(self) -> set[str]:
        return memory.parse_blocks(self.run(memory.OFFLINE_BLOCKS_COMMAND, check=True).stdout)

    def set_state(self, blocks: list[str], state: str) -> None:
        self.run(memory.set_state_command(blocks, state), check=True)

    def offline(self, block: str, timeout_s: float = 30) -> bool:
        """Offline one block within timeout_s; True if it went offline."""
        out = self.run(memory.offline_command(block, timeout_s), timeout_s=timeout_s + 30)
        return memory.parse_offline_result(out.stdout).get("state") == "offline"

    # -- CMA -----------------------------------------------------------------------
    def cma_area(self) -> str:
        area = self.run(f"ls {CMA_DEBUGFS} | head -1", check=True).stdout.strip()
        if not area:
            raise InfraError("the guest has no CMA area", hint="boot with cma=SIZE")
        return area

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
    the user names: vmtest does not know its tree)."""
    kernel = config_.getoption("vmtest_kernel")
    if kernel:
        image = kbuild.image_at(Path(kernel))
        if not image.is_file():
            raise pytest.UsageError(f"--vmtest-kernel {kernel}: no kernel image there")
        return image, variant or Path(kernel).name, None
    source = config_.getoption("vmtest_source")
    if source:
        spec = kbuild.spec_for_source(source, variant=variant or "default")
    else:
        exp = config.load(config_.getoption("vmtest_config") or paths.default_config())
        base = config_.getoption("vmtest_base")
        kdef = exp.kernel(base) if base else exp.kernels[0]
        spec = kdef.build_spec(kdef.variant(variant) if variant else kdef.variants[0])
    arch = config_.getoption("vmtest_arch")
    if arch:
        spec = dataclasses.replace(spec, arch=archs.get(arch).name)
    built = kbuild.build_kernel(spec)
    return built.artifact.image, spec.variant, built


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
    """The booted guest behind `vm` (lives for --vmtest-scope)."""
    try:
        image, name, built = _image(request.config, vmtest_variant)
        opts = boot.BootOptions(accel=request.config.getoption("vmtest_accel"),
                                programs=("bash",), boot_timeout_s=120,
                                arch=images.arch_of(image) or archs.DEFAULT)
        guest = Guest(image, name, opts, tmp_path_factory.mktemp(f"vmtest-{name}"), built,
                      request.config.getoption("vmtest_kselftest_dir"))
    except VmtestError as exc:
        pytest.fail(f"vmtest could not boot the guest: {exc.render()}", pytrace=False)
    try:
        yield guest
    finally:
        guest.close()


@pytest.fixture
def vm(vmtest_guest: Guest) -> Guest:
    """A booted guest; dmesg() reports what the kernel logs from this test on."""
    vmtest_guest.ensure_alive()
    vmtest_guest.mark()
    return vmtest_guest


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
        report.sections.append(("vmtest: kernel log since the test began", delta[-20000:]))
        with contextlib.suppress(Exception):
            report.sections.append(("vmtest: console tail", guest.machine.console.tail(40)))
