"""Kernel builds with ccache and a content-addressed artifact cache.

The cache key covers everything that decides the bytes of the kernel: the source
identity, the patch series (contents, in order), the fragments (contents, the
architecture's own included), the architecture, the (cross) compiler's version and this
recipe's version. Same key -> the stored image is used
and make does not run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from vmtest import arch as archs
from vmtest import hostcmd, paths, procs
from vmtest.deadline import utc_now
from vmtest.errors import BuildError, ConfigError, MissingRequirement, PatchError
from vmtest.kernel import kconfig
from vmtest.kernel.images import IMAGES, image_at, image_in  # noqa: F401 (image_at: API)
from vmtest.kernel.source import KernelSource, LocalTree, parse_source

log = logging.getLogger(__name__)

# Bump when the way a kernel is configured or built changes.
# 2: vmlinux (PVH) instead of bzImage when the config has CONFIG_PVH; ccache depend mode.
RECIPE_VERSION = "2"
# Where a kernel built with modules keeps them in its cache folder: lib/modules/RELEASE.
MODULES_DIR = "modules"


@dataclass(frozen=True)
class BuildSpec:
    source: KernelSource
    fragments: tuple[kconfig.Fragment, ...]
    patches: tuple[Path, ...] = ()
    variant: str = "default"
    base: str = ""  # a name for the base, e.g. "6.1"; recorded in the identity
    arch: str = archs.DEFAULT  # a name of arch.ARCHES


def all_fragments(spec: BuildSpec) -> tuple[kconfig.Fragment, ...]:
    """spec's fragments, then its architecture's own (which overrides them)."""
    own = archs.get(spec.arch).fragment
    return spec.fragments + ((kconfig.load_fragment(own),) if own else ())


def with_config(spec: BuildSpec, needs: dict[str, str]) -> BuildSpec:
    """spec with, for each symbol of `needs` ({CONFIG_X: the fragment that turns it
    on}) that its fragments and its architecture's leave off, that fragment appended:
    another kernel, with its own cache key (a virtio-mem run's x86_64 kernel), or spec
    itself when nothing is missing (arm64's fragment has CONFIG_VIRTIO_MEM)."""
    have = all_fragments(spec)
    names = {f.name for f in spec.fragments}
    extra = tuple(dict.fromkeys(
        fragment for symbol, fragment in needs.items()
        if not kconfig.fragments_have(have, symbol) and fragment not in names))
    if not extra:
        return spec
    from dataclasses import replace

    return replace(spec, fragments=spec.fragments + tuple(kconfig.load_fragment(name)
                                                          for name in extra))


@dataclass(frozen=True)
class KernelArtifact:
    """A built kernel in the cache."""

    key: str
    directory: Path
    meta: dict[str, object] = field(default_factory=dict, compare=False)
    # True when build() found it in the cache (make did not run), False when it built it.
    cached: bool = field(default=False, compare=False)

    @property
    def image(self) -> Path:
        """What QEMU's -kernel boots: vmlinux (PVH entry, no decompression) when the
        config has CONFIG_PVH, else the bzImage."""
        return image_in(self.directory)

    @property
    def config(self) -> Path:
        return self.directory / "config"

    @property
    def modules(self) -> Path | None:
        """The folder holding lib/modules/RELEASE, for a kernel built with modules."""
        folder = self.directory / MODULES_DIR
        return folder if (folder / "lib/modules").is_dir() else None

    @property
    def release(self) -> str:
        return str(self.meta.get("release", ""))

    @classmethod
    def load(cls, directory: Path, *, cached: bool = True) -> KernelArtifact:
        meta = json.loads((directory / "meta.json").read_text())
        return cls(key=str(meta["key"]), directory=directory, meta=meta, cached=cached)


def spec_for_source(source: str, *, fragments: tuple[str | Path, ...] = (),
                    patches: tuple[Path, ...] = (), variant: str = "default",
                    arch: str = archs.DEFAULT) -> BuildSpec:
    """An ad hoc build (no config): a source as `parse_source` reads it, the default
    fragments unless others are named, patches in order."""
    return BuildSpec(source=parse_source(source),
                     fragments=tuple(kconfig.load_fragment(f)
                                     for f in (fragments or kconfig.DEFAULT_FRAGMENTS)),
                     patches=patches, variant=variant, base=source, arch=arch)


def compiler_version(arch: str = archs.DEFAULT) -> str:
    """The first line of `gcc --version` of the compiler that builds for arch."""
    target = archs.get(arch)
    gcc = shutil.which(target.gcc) or target.gcc
    try:
        _, out = hostcmd.output([gcc, "--version"], check=True)
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        package = "build-essential" if target.native else " ".join(target.packages)
        raise MissingRequirement(f"{target.gcc} not found",
                                 hint=f"apt-get install {package}") from exc
    return out.splitlines()[0]


def cache_key(spec: BuildSpec, source_identity: str, compiler: str) -> str:
    digest = hashlib.sha256()

    def put(label: str, value: bytes) -> None:
        digest.update(f"{label}:{len(value)}:".encode() + value + b"\n")

    put("recipe", RECIPE_VERSION.encode())
    put("arch", spec.arch.encode())
    put("source", source_identity.encode())
    put("compiler", compiler.encode())
    for frag in all_fragments(spec):
        put("fragment", frag.path.read_bytes())
    for patch in spec.patches:
        put("patch", patch.read_bytes())
    return digest.hexdigest()


def make_args(key: str, variant: str, arch: str = archs.DEFAULT) -> list[str]:
    """Arguments for every make call; the key lands in /proc/version (identity)."""
    target = archs.get(arch)
    cross = [f"CROSS_COMPILE={target.cross_compile}"] if target.cross_compile else []
    return [
        f"ARCH={target.make_arch}",
        f"CC=ccache {target.gcc}",
        *cross,
        f"LOCALVERSION=-vmtest-{variant}",
        # Reproducible version string; the build host field carries the cache key so a
        # running guest can say exactly which build it is.
        "KBUILD_BUILD_USER=vmtest",
        f"KBUILD_BUILD_HOST={key[:16]}",
        "KBUILD_BUILD_TIMESTAMP=vmtest",
    ]


def lookup(spec: BuildSpec) -> tuple[str, KernelArtifact | None]:
    key = cache_key(spec, spec.source.identity(), compiler_version(spec.arch))
    directory = paths.cache_dir("kernels") / key[:24]
    if (directory / "meta.json").is_file() and any((directory / n).is_file() for n in IMAGES):
        return key, KernelArtifact.load(directory)
    return key, None


def check_tools(arch: str = archs.DEFAULT) -> None:
    target = archs.get(arch)
    missing = [tool for tool in ("make", "gcc", target.gcc, "ccache", "flex", "bison", "bc")
               if shutil.which(tool) is None]
    if missing:
        cross = "" if target.native else " " + " ".join(target.packages)
        raise MissingRequirement(
            f"kernel build tools missing: {', '.join(dict.fromkeys(missing))}",
            hint="apt-get install build-essential ccache flex bison bc libelf-dev libssl-dev"
                 + cross)


def _touched_files(patch: Path) -> set[str]:
    """Paths (relative to the tree, -p1) a unified diff modifies; ConfigError for a path
    that leaves the tree (a '..' after -p1, or an absolute one): they are recorded, and
    restored -- unlinked and copied -- when the series changes."""
    files = set()
    for number, line in enumerate(patch.read_text(errors="replace").splitlines(), 1):
        if line.startswith("+++ ") or line.startswith("--- "):
            name = line[4:].split("\t")[0].strip()
            if name != "/dev/null" and "/" in name:
                rel = name.split("/", 1)[1]
                if not rel or rel.startswith("/") or ".." in PurePosixPath(rel).parts:
                    raise ConfigError(
                        f"patch {patch}, line {number}: {name!r} is outside the kernel tree",
                        hint="a patch's paths are a/PATH and b/PATH inside the tree "
                             "(git format-patch, diff -u from the tree's parent)")
                files.add(rel)
    return files


def _inside(rel: str) -> bool:
    """Whether TREE/rel stays in the tree (a series recorded before paths were checked)."""
    return not rel.startswith("/") and ".." not in PurePosixPath(rel).parts


def _location(source: KernelSource) -> str:
    if isinstance(source, LocalTree):
        return f"tree:{source.path}@{source.ref or ''}"
    return source.identity()


def _prepare_worktree(pristine: Path, work: Path, spec: BuildSpec, log_file: Path) -> Path:
    """One working tree per base, shared by its variants, with spec's series applied.

    The tree is a hard-link copy of the pristine source. Switching variants restores
    the files the previous series touched (fresh copies, so make sees a new mtime)
    and applies the new series; make then rebuilds only what the patches change, and
    ccache answers for files whose content it has seen before (same paths, so hits).
    """
    tree = work / "tree"
    state_file = work / "series.json"
    marker = tree / ".vmtest-worktree"
    identity = spec.source.identity()
    if not marker.exists() or marker.read_text() != identity:
        # New tree contents (first use, or the local tree moved to another commit): a
        # fresh hard-link copy keeps the source's mtimes, so make rebuilds what changed.
        previous = json.loads(state_file.read_text())["files"] if state_file.exists() else []
        shutil.rmtree(tree, ignore_errors=True)
        subprocess.run(["cp", "-al", str(pristine), str(tree)], check=True)
        # Files the old series had patched are older than their objects now: fresh
        # copies get a new mtime so make recompiles them.
        for rel in previous:
            if _inside(rel) and (tree / rel).exists():
                (tree / rel).unlink()
                shutil.copyfile(pristine / rel, tree / rel)
        marker.write_text(identity)
        state_file.unlink(missing_ok=True)
    wanted = [hashlib.sha256(p.read_bytes()).hexdigest() for p in spec.patches]
    state = json.loads(state_file.read_text()) if state_file.exists() else {"series": [],
                                                                              "files": []}
    if state["series"] == wanted:
        return tree
    # Undo the previous series: restore every file it touched from the pristine tree.
    for rel in filter(_inside, state["files"]):
        target = tree / rel
        target.unlink(missing_ok=True)
        if (pristine / rel).exists():
            shutil.copyfile(pristine / rel, target)
    touched: set[str] = set()
    state_file.write_text(json.dumps({"series": None, "files": sorted(state["files"])}))
    with log_file.open("a") as out:
        for patch in spec.patches:
            touched |= _touched_files(patch)
            # Record before applying: a half-applied patch is undone next time.
            state_file.write_text(json.dumps({"series": None,
                                              "files": sorted(touched | set(state["files"]))}))
            out.write(f"$ patch -p1 -i {patch}\n")
            out.flush()
            # --fuzz=0: a hunk applies where its context matches exactly (at an offset, as
            # git apply does), or not at all -- never silently somewhere else.
            proc = subprocess.run(["patch", "-p1", "--forward", "--no-backup-if-mismatch",
                                   "--fuzz=0", "-r", "-", "-i", str(patch)], cwd=tree,
                                  capture_output=True, text=True, check=False)
            out.write(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                failed = [ln for ln in proc.stdout.splitlines() if "FAILED" in ln
                          or "can't find file" in ln or "malformed" in ln.lower()]
                raise PatchError(
                    f"patch {patch} does not apply to {spec.source.describe()} "
                    f"(variant {spec.variant})",
                    log_tail="\n".join(failed or proc.stdout.splitlines()[-10:]),
                    log_path=log_file,
                    hint="rebase the patch onto this base (vmtest applies patches exactly, "
                         "without fuzz), or drop it from the variant's series")
    state_file.write_text(json.dumps({"series": wanted, "files": sorted(touched)}))
    return tree


def build(spec: BuildSpec, *, jobs: int | None = None, force: bool = False) -> KernelArtifact:
    """Build (or find in the cache) the kernel described by spec."""
    key, cached = lookup(spec)
    if cached is not None and not force:
        log.info("kernel cache hit: %s (%s)", cached.release, cached.directory)
        return cached
    check_tools(spec.arch)
    pristine = spec.source.tree()
    artifacts = paths.cache_dir("kernels")
    log_file = paths.cache_dir("logs") / f"build-{key[:24]}.log"
    work = _work_dir(spec)
    with paths.locked(work / "lock"):
        # Another process may have built this key while we waited for the lock.
        _, cached = lookup(spec)
        if cached is not None and not force:
            log.info("kernel built meanwhile by another process: %s", cached.directory)
            return cached
        log_file.write_text(f"# vmtest build {key}\n# source {spec.source.identity()}\n")
        final = artifacts / key[:24]
        with paths.publishing(final) as staging:
            _build_locked(spec, key, pristine, work, staging, log_file, jobs)
        log.info("built %s", final)
        return KernelArtifact.load(final, cached=False)


def _work_dir(spec: BuildSpec) -> Path:
    """One working tree and build dir per source *location* (a Debian package version, a
    local tree's path): successive commits of a tree (bisection) build incrementally."""
    work = paths.cache_dir("work") / hashlib.sha256(
        _location(spec.source).encode()).hexdigest()[:16]
    work.mkdir(parents=True, exist_ok=True)
    return work


def build_dir_of(work: Path, arch: str) -> Path:
    """The kernel build dir of a base's working tree, one per architecture (x86-64's
    keeps its old name)."""
    return work / ("out" if arch == archs.DEFAULT else f"out-{arch}")


@contextlib.contextmanager
def worktree(spec: BuildSpec, log_file: Path) -> Iterator[tuple[Path, Path]]:
    """(tree with spec's series applied, its kernel build dir), held under the base's
    lock: for what else is built from the same tree (the selftests)."""
    pristine = spec.source.tree()
    work = _work_dir(spec)
    with paths.locked(work / "lock"):
        yield _prepare_worktree(pristine, work, spec, log_file), build_dir_of(work, spec.arch)


def _build_locked(spec: BuildSpec, key: str, pristine: Path, work: Path, staging: Path,
                  log_file: Path, jobs: int | None) -> None:
    """Build into `staging` (the image, its config, meta.json and the log)."""
    artifacts = staging.parent
    tree = _prepare_worktree(pristine, work, spec, log_file)
    build_dir = build_dir_of(work, spec.arch)
    args = make_args(key, spec.variant, spec.arch)
    # Depend mode: a miss runs the compiler once and takes the includes from its -MMD
    # output; the default mode preprocesses every miss twice (+41 % on a cold build of
    # mm/ here, against +5 % in depend mode). Hits need the same manifest, which the
    # per-source work directory and CCACHE_BASEDIR give.
    env = dict(os.environ, CCACHE_DIR=str(paths.cache_dir("ccache")),
               CCACHE_BASEDIR=str(work), CCACHE_DEPEND="1")
    started = time.monotonic()
    ccache_before = _ccache_stats(env)
    dotconfig = _configure_if_needed(tree, build_dir, spec, args, log_file)
    # One job more than cores keeps both busy while make and ccache do I/O (-j3 vs -j2
    # on 2 cores: 10 % faster on a cold mm/).
    jobs = jobs or (os.cpu_count() or 1) + 1
    pvh = "CONFIG_PVH=y" in dotconfig.splitlines()
    # arm64: Image, the uncompressed kernel QEMU loads itself (device tree) or edk2
    # starts through its EFI stub. System.map names vCPU PCs (qemu/symbols.py).
    target = "Image" if spec.arch == "arm64" else "vmlinux" if pvh else "bzImage"
    # A kernel with modules (the kselftest kernels: kernels/fragments/kselftest-mm.config)
    # builds and installs them too; the others (tinyconfig has no modules) as before.
    modules = "CONFIG_MODULES=y" in dotconfig.splitlines()
    argv = ["make", f"O={build_dir}", *args, f"-j{jobs}", target,
            *(["modules"] if modules else [])]
    what = f"building {spec.source.describe()} ({spec.variant})"
    procs.progress.info("%s: %s (log: %s)", what, " ".join(argv), log_file)

    def make(argv: list[str]) -> int:
        with log_file.open("a") as out:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            return procs.run_group(argv, cwd=tree, stdout=out, stderr=subprocess.STDOUT,
                                   env=env, heartbeat=procs.log_heartbeat(what, log_file)
                                   ).returncode

    status = make(argv)
    if status == 0 and modules:
        # /lib/modules/RELEASE with modules.dep (the host's depmod), stripped: the guest
        # gets it as an initramfs layer (guest/rootfs.modules_layer).
        status = make(["make", f"O={build_dir}", *args, "modules_install",
                       f"INSTALL_MOD_PATH={staging / MODULES_DIR}", "INSTALL_MOD_STRIP=1"])
        for folder in (staging / MODULES_DIR).glob("lib/modules/*"):
            for name in ("build", "source"):  # 6.1's links into the work tree
                if (folder / name).is_symlink():
                    (folder / name).unlink()
    if status != 0:
        failed_log = artifacts / f"failed-{key[:24]}.log"
        shutil.copy(log_file, failed_log)
        raise BuildError(f"kernel build failed (make exit {status})",
                         log_path=failed_log, log_tail=kconfig.build_errors(failed_log),
                         hint="read the first error in the log; for a patch series, build the "
                              "tree without it to see whether the base builds")
    elapsed_s = time.monotonic() - started
    release = (build_dir / "include/config/kernel.release").read_text().strip()
    made = {"Image": "arch/arm64/boot/Image", "vmlinux": "vmlinux",
            "bzImage": "arch/x86/boot/bzImage"}[target]
    shutil.copy(build_dir / made, staging / target)
    if target != "vmlinux":
        shutil.copy(build_dir / "System.map", staging / "System.map")
    (staging / "config").write_text(dotconfig)
    meta = {
        "key": key,
        "release": release,
        "source": spec.source.identity(),
        "source_description": spec.source.describe(),
        "base": spec.base,
        "variant": spec.variant,
        "patches": [p.name for p in spec.patches],
        "patch_sha256": [hashlib.sha256(p.read_bytes()).hexdigest() for p in spec.patches],
        "fragments": [f.name for f in all_fragments(spec)],
        "arch": spec.arch,
        "compiler": compiler_version(spec.arch),
        "build_seconds": round(elapsed_s, 1),
        "jobs": jobs,
        "ccache": _ccache_delta(ccache_before, _ccache_stats(env)),
        "built_at": utc_now(),
    }
    shutil.copy(log_file, staging / "build.log")
    (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("built %s in %.1f s", release, elapsed_s)


def _configure_if_needed(tree: Path, build_dir: Path, spec: BuildSpec, args: list[str],
                         log_file: Path) -> str:
    """Re-run Kconfig only when the fragments (or make arguments) changed.

    Re-running it rewrites .config and may make make rebuild more than the patches need.
    """
    stamp = build_dir / ".vmtest-config-inputs"
    fragments = list(all_fragments(spec))
    inputs = json.dumps({"fragments": [f.path.read_text() for f in fragments],
                         "args": args[:2]})
    dotconfig = build_dir / ".config"
    if dotconfig.exists() and stamp.exists() and stamp.read_text() == inputs:
        text = dotconfig.read_text()
        if not kconfig.verify(fragments, text, spec.arch):
            return text
    text = kconfig.configure(tree, build_dir, fragments, args, log_file, spec.arch)
    stamp.write_text(inputs)
    return text


def _ccache_stats(env: dict[str, str]) -> dict[str, int]:
    proc = subprocess.run(["ccache", "--print-stats"], capture_output=True, text=True, env=env,
                          check=False)
    stats: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        name, _, value = line.partition("\t")
        if value.strip().isdigit():
            stats[name] = int(value)
    return stats


def _ccache_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    hits = sum(after.get(k, 0) - before.get(k, 0) for k in ("direct_cache_hit",
                                                            "preprocessed_cache_hit"))
    misses = after.get("cache_miss", 0) - before.get("cache_miss", 0)
    return {"hits": hits, "misses": misses}


@dataclass(frozen=True)
class BuiltKernel:
    """A build request and its answer: what was asked for (the names a result's
    identity records) and the kernel in the cache."""

    spec: BuildSpec
    artifact: KernelArtifact


def build_kernel(spec: BuildSpec, *, jobs: int | None = None,
                 force: bool = False) -> BuiltKernel:
    return BuiltKernel(spec, build(spec, jobs=jobs, force=force))
