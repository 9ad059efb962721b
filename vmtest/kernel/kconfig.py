"""Config fragments: parse, merge with the kernel's merge_config.sh, verify.

Kconfig silently drops an option whose dependencies are not met; a kernel built
without, say, CMA_SYSFS would make every later measurement quietly wrong. So after
`olddefconfig` every option a fragment asks for is checked against the result.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vmtest import paths, procs
from vmtest.errors import ConfigError, KconfigError

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")

# What a vmtest kernel must have (issue 2): checked on every build, whatever the
# fragments say.
REQUIRED = {
    "CONFIG_CMA": "y", "CONFIG_DMA_CMA": "y", "CONFIG_CMA_DEBUGFS": "y", "CONFIG_CMA_SYSFS": "y",
    "CONFIG_MEMORY_HOTPLUG": "y", "CONFIG_MEMORY_HOTREMOVE": "y", "CONFIG_ACPI_HOTPLUG_MEMORY": "y",
    "CONFIG_MIGRATION": "y", "CONFIG_COMPACTION": "y", "CONFIG_TRANSPARENT_HUGEPAGE": "y",
    "CONFIG_DEBUG_FS": "y", "CONFIG_FTRACE": "y", "CONFIG_FUNCTION_TRACER": "y",
    "CONFIG_DYNAMIC_DEBUG": "y", "CONFIG_VIRTIO_NET": "y", "CONFIG_VIRTIO_CONSOLE": "y",
    "CONFIG_SERIAL_8250_CONSOLE": "y", "CONFIG_DEVTMPFS": "y", "CONFIG_BLK_DEV_INITRD": "y",
}

# The console driver differs per architecture (arch.Arch.console): x86's 8250, the
# PL011 of arm64's `virt` board.
REQUIRED_CONSOLE = {"x86_64": "CONFIG_SERIAL_8250_CONSOLE",
                    "arm64": "CONFIG_SERIAL_AMBA_PL011_CONSOLE"}

DEFAULT_FRAGMENTS = ("qemu-guest", "mm-migration", "mm-selftests")


def required(arch: str = "x86_64") -> dict[str, str]:
    """REQUIRED for one architecture."""
    wanted = {sym: val for sym, val in REQUIRED.items()
              if sym not in REQUIRED_CONSOLE.values()}
    wanted[REQUIRED_CONSOLE[arch]] = "y"
    return wanted


@dataclass(frozen=True)
class Fragment:
    name: str
    path: Path
    options: tuple[tuple[str, str | None], ...]  # (symbol, value); None = "is not set"
    # Symbols asked for where the architecture or tree has them: a line "# vmtest:
    # where available" before the option (6.1's uffd-wp markers are x86-only). Kconfig
    # dropping one is no error; what needed it says so (a selftest's skip).
    optional: frozenset[str] = frozenset()


OPTIONAL_MARK = "# vmtest: where available"


def parse_config(text: str) -> dict[str, str | None]:
    """A .config or fragment as {CONFIG_X: value or None for 'is not set'}."""
    result: dict[str, str | None] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := _SET.match(line):
            result[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            result[m.group(1)] = None
    return result


def load_fragment(spec: str | Path) -> Fragment:
    """A fragment by name (kernels/fragments/NAME.config) or by path."""
    path = Path(spec)
    if not path.suffix:
        path = paths.kernels_dir() / "fragments" / f"{spec}.config"
    if not path.is_file():
        available = sorted(p.stem for p in (paths.kernels_dir() / "fragments").glob("*.config"))
        raise ConfigError(f"config fragment {spec!r} not found ({path})",
                          hint=f"available: {', '.join(available)}, or a path to a .config file")
    text = path.read_text()
    options = tuple(parse_config(text).items())
    lines = [line.strip() for line in text.splitlines()]
    optional = frozenset(
        sym for mark, line in zip(lines, lines[1:], strict=False) if mark == OPTIONAL_MARK
        for sym in parse_config(line))
    return Fragment(name=path.stem, path=path, options=options, optional=optional)


@dataclass(frozen=True)
class Dropped:
    fragment: str
    symbol: str
    wanted: str | None
    got: str | None

    def __str__(self) -> str:
        want = " is not set" if self.wanted is None else f"={self.wanted}"
        got = " is not set" if self.got is None else f"={self.got}"
        return f"{self.fragment}: {self.symbol}{want} (got {self.symbol}{got})"


def verify(fragments: list[Fragment], dotconfig: str, arch: str = "x86_64") -> list[Dropped]:
    """Every option asked for, by a fragment or by REQUIRED, that the final .config lacks.
    A symbol several fragments name is checked for the last one's value, the one
    merge_config.sh keeps (a per-architecture fragment overrides the common ones)."""
    final = parse_config(dotconfig)
    merged: dict[str, tuple[str, str | None]] = {}
    optional: set[str] = set()
    for frag in fragments:
        for sym, val in frag.options:
            merged.pop(sym, None)  # re-inserted: the order stays the fragments' own
            merged[sym] = (frag.name, val)
            if sym in frag.optional:
                optional.add(sym)
            else:
                optional.discard(sym)
    wanted: list[tuple[str, str, str | None]] = [
        (origin, sym, val) for sym, (origin, val) in merged.items() if sym not in optional
    ]
    wanted += [("required by vmtest", sym, val) for sym, val in required(arch).items()]
    dropped = []
    for origin, sym, val in wanted:
        got = final.get(sym)
        if val is None or val == "n":
            if got not in (None, "n"):
                dropped.append(Dropped(origin, sym, val, got))
        elif got != val:
            dropped.append(Dropped(origin, sym, val, got))
    return dropped


def configure(tree: Path, build_dir: Path, fragments: list[Fragment], make_args: list[str],
              log_file: Path, arch: str = "x86_64") -> str:
    """tinyconfig + fragments (merge_config.sh) + olddefconfig; returns the .config text."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as out:
        def run(argv: list[str]) -> None:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            proc = procs.run_group(argv, cwd=tree, stdout=out, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                raise KconfigError(f"kernel configuration step failed: {' '.join(argv)}",
                                   log_path=log_file, log_tail=tail_lines(log_file))

        run(["make", f"O={build_dir}", *make_args, "tinyconfig"])
        run(["bash", str(tree / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(build_dir),
             str(build_dir / ".config"), *[str(f.path) for f in fragments]])
        run(["make", f"O={build_dir}", *make_args, "olddefconfig"])
    dotconfig = (build_dir / ".config").read_text()
    dropped = verify(fragments, dotconfig, arch)
    if dropped:
        listing = "\n".join(f"  {d}" for d in dropped)
        raise KconfigError(
            f"Kconfig dropped {len(dropped)} option(s) that were asked for:\n{listing}",
            hint="add the options they depend on to the fragment (see `make menuconfig`, "
                 "search with '/') or remove them",
            log_path=log_file)
    return dotconfig


# A compiler's or the linker's error line (gcc: "FILE:LINE:COL: error: ..." and "fatal
# error:"; ld: "undefined reference"); make's own "*** ... Error N" lines are not these.
_ERROR_LINE = re.compile(r": (?:fatal )?error: |#error |undefined reference to ")


def build_errors(path: Path, first: int = 8, last: int = 12) -> str:
    """What a failed build's log says went wrong: its first error lines (make -j goes on
    with other files after the first error, which then sits far above the end), then its
    last lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in text if _ERROR_LINE.search(line)][:first]
    tail = text[-last:]
    if not errors:
        return "\n".join(text[-(first + last):])
    return "\n".join([*errors, "...", *(line for line in tail if line not in errors)])


def tail_lines(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# virtio-mem's driver: in arm64's own fragment, in this one for x86_64 (not a default:
# every cached kernel would be built again for it). A run that asks for virtio-mem adds
# it where vmtest builds the kernel (`with_virtio_mem`), and refuses a kernel built
# without it (`check_virtio_mem`), as NUMA guests do the fragment numa.
VIRTIO_MEM_FRAGMENT = "virtio-mem"
VIRTIO_MEM = "CONFIG_VIRTIO_MEM"


def fragments_have(fragments: Iterable[Fragment], symbol: str, value: str = "y") -> bool:
    """Whether the merged fragments set symbol to value (a later fragment wins)."""
    got: str | None = None
    for frag in fragments:
        for sym, val in frag.options:
            if sym == symbol:
                got = val
    return got == value


def check_virtio_mem(config: Path | None, what: str,
                     fragment_flag: str = "--fragment") -> None:
    """Refuse a kernel whose config (beside its image) lacks CONFIG_VIRTIO_MEM=y for
    `what` (a guest with a virtio-mem device): the device would stay empty, and the
    run wait for memory that never comes. A kernel with no config beside it is not
    checked here."""
    if config is None or not config.is_file():
        return
    if parse_config(config.read_text(errors="replace")).get(VIRTIO_MEM) == "y":
        return
    defaults = " ".join(f"{fragment_flag} {name}" for name in DEFAULT_FRAGMENTS)
    raise ConfigError(f"{what}: the kernel {config.parent} is built without {VIRTIO_MEM} "
                      f"(add the fragment {VIRTIO_MEM_FRAGMENT})",
                      hint=f"its config: {config}; build it with {defaults} "
                           f"{fragment_flag} {VIRTIO_MEM_FRAGMENT}, or list "
                           f"{VIRTIO_MEM_FRAGMENT} in an experiment kernel's fragments")
