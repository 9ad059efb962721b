"""The kernel's own selftests, built from the same tree (and patch series) as the kernel.

`make -C tools/testing/selftests TARGETS=... install` gives the layout kselftest users
know: run_kselftest.sh, kselftest/runner.sh, kselftest-list.txt (COLLECTION:TEST per
line) and one folder per collection. vmtest builds it on the host with the host's
compiler (the guest gets the binaries' shared libraries, vmtest/guest/rootfs.py) and keeps
it in the cache under a key made of the kernel's build key and the collections.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vmtest import arch as archs
from vmtest import paths, procs
from vmtest.errors import BuildError, ConfigError, MissingRequirement
from vmtest.kernel import build as kbuild
from vmtest.kernel import kconfig

log = logging.getLogger(__name__)

# Bump when the way selftests are built or installed changes.
RECIPE_VERSION = "1"
# The mm selftests are tools/testing/selftests/vm up to 6.2 and .../mm from 6.3 on;
# users name either, and get the one their tree has.
MM_NAMES = ("mm", "vm")
# What `--kselftest mm` builds beside the named collection: memory hotplug's own test.
DEFAULT_COLLECTIONS = ("mm", "memory-hotplug")
# The sources that did not compile, one per line, in the install (absent: all did).
BUILD_FAILURES = "vmtest-build-failures.txt"
# kselftest/runner.sh's default when a collection has no `settings` file.
DEFAULT_TIMEOUT_S = 45


@dataclass(frozen=True)
class SelftestInstall:
    """A kselftest install folder (what `make ... install` wrote)."""

    directory: Path

    def tests(self) -> list[str]:
        """COLLECTION:TEST entries, in the runner's order."""
        listing = self.directory / "kselftest-list.txt"
        return [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()] \
            if listing.is_file() else []

    def collections(self) -> list[str]:
        return list(dict.fromkeys(t.split(":", 1)[0] for t in self.tests()))

    def build_failures(self) -> list[str]:
        """Sources of the tree's selftests that did not compile (their tests fail)."""
        path = self.directory / BUILD_FAILURES
        return path.read_text().split() if path.is_file() else []

    def is_program(self, collection: str, name: str) -> bool:
        """An executable of the collection's install that its list does not name (6.12's
        mm lists only run_vmtests.sh, which runs soft-dirty, madv_populate, ...)."""
        path = self.directory / collection / name
        return "/" not in name and path.is_file() and os.access(path, os.X_OK)

    def timeout_s(self, collection: str) -> int:
        """The collection's per-test timeout: its `settings` file, else the runner's."""
        settings = self.directory / collection / "settings"
        if settings.is_file():
            for line in settings.read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "timeout" and value.strip().isdigit():
                    return int(value)
        return DEFAULT_TIMEOUT_S

    def wanted_options(self, collection: str) -> list[str]:
        """The CONFIG_X=v lines of the collection's `config` file (what its tests need;
        lib.mk installs it beside the tests)."""
        config = self.directory / collection / "config"
        if not config.is_file():
            return []
        return [ln.strip() for ln in config.read_text().splitlines()
                if ln.strip().startswith("CONFIG_")]

    def select(self, selection: str) -> list[str]:
        """`COLL[:TEST] ...` (space- or comma-separated) -> the entries to run; the mm
        collection answers to both of its names. ConfigError naming what is unknown."""
        available = self.tests()
        present = self.collections()
        chosen: list[str] = []
        for word in selection.replace(",", " ").split():
            coll, _, test = word.partition(":")
            if coll in MM_NAMES:
                coll = next((c for c in MM_NAMES if c in present), coll)
            if coll not in present:
                raise ConfigError(f"kselftest: no collection {coll!r} in this tree's selftests",
                                  hint=f"built: {', '.join(present) or 'none'}")
            matches = [t for t in available if t.split(":", 1)[0] == coll
                       and (not test or t.split(":", 1)[1] == test)]
            if not matches and test and self.is_program(coll, test):
                matches = [f"{coll}:{test}"]  # a program run_vmtests.sh runs, run alone
            if not matches:
                names = [t.split(":", 1)[1] for t in available if t.startswith(coll + ":")]
                raise ConfigError(f"kselftest: no test {test!r} in collection {coll}",
                                  hint=f"tests: {', '.join(names)}, or a program of "
                                       f"{coll}/ (e.g. {coll}:soft-dirty)")
            chosen += [m for m in matches if m not in chosen]
        if not chosen:
            raise ConfigError("kselftest: nothing selected", hint="name a collection, e.g. mm")
        return chosen


def collections_for(tree: Path, selection: str) -> tuple[str, ...]:
    """The collection folders a selection needs, as this tree names them."""
    root = tree / "tools/testing/selftests"
    wanted: list[str] = []
    for word in (selection.replace(",", " ").split() or list(DEFAULT_COLLECTIONS)):
        coll = word.split(":", 1)[0]
        names = MM_NAMES if coll in MM_NAMES else (coll,)
        found = next((n for n in names if (root / n).is_dir()), None)
        if found is None:
            raise ConfigError(f"kselftest: the tree has no selftests collection {coll!r}",
                              hint="collections are the folders of tools/testing/selftests")
        if found not in wanted:
            wanted.append(found)
    return tuple(wanted)


def selftest_key(kernel_key: str, collections: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for part in (RECIPE_VERSION, kernel_key, *collections):
        digest.update(part.encode() + b"\n")
    return digest.hexdigest()


def build_selftests(built: kbuild.BuiltKernel, selection: str = "mm",
                    *, jobs: int | None = None) -> SelftestInstall:
    """The selftests of built's tree (its patch series applied), built and installed, or
    found in the cache. Collections are those `selection` names plus memory-hotplug."""
    spec = built.spec
    kbuild.check_tools(spec.arch)
    pristine = spec.source.tree()
    words = selection.replace(",", " ").split()
    colls = collections_for(pristine, " ".join(words + ["memory-hotplug"]))
    key = selftest_key(built.artifact.key, colls)
    target = paths.cache_dir("selftests") / key[:24]
    if (target / "kselftest-list.txt").is_file():
        log.info("selftests cache hit: %s", target)
        return SelftestInstall(target)
    log_file = paths.cache_dir("logs") / f"selftests-{key[:24]}.log"
    log_file.write_text(f"# vmtest selftests {key}\n# kernel {built.artifact.key}\n")
    with kbuild.worktree(spec, log_file) as (tree, build_dir):
        if (target / "kselftest-list.txt").is_file():  # built meanwhile by another process
            return SelftestInstall(target)
        with paths.publishing(target) as staging:
            _make(tree, build_dir, built.artifact.key, spec.variant, colls, staging,
                  log_file, jobs, spec.arch)
            (staging / "vmtest-selftests.json").write_text(json.dumps({
                "key": key, "kernel_key": built.artifact.key, "collections": list(colls),
                "source": spec.source.describe(), "variant": spec.variant,
                "arch": spec.arch, "compiler": kbuild.compiler_version(spec.arch)},
                indent=2) + "\n")
    return SelftestInstall(target)


def make_argv(tree: Path, build_dir: Path, colls: tuple[str, ...], jobs: int,
              arch: str = archs.DEFAULT) -> list[str]:
    """make of the selftests of colls (a foreign arch's cross-built: kselftest's lib.mk
    takes CC from CROSS_COMPILE)."""
    target = archs.get(arch)
    cross = [] if target.native else [f"ARCH={target.make_arch}",
                                      f"CROSS_COMPILE={target.cross_compile}"]
    return ["make", "-C", str(tree / "tools/testing/selftests"), f"O={build_dir}", *cross,
            f"TARGETS={' '.join(colls)}", f"-j{jobs}"]


def _make(tree: Path, build_dir: Path, kernel_key: str, variant: str,
          colls: tuple[str, ...], install: Path, log_file: Path, jobs: int | None,
          arch: str = archs.DEFAULT) -> None:
    jobs = jobs or (os.cpu_count() or 1) + 1
    selftests = make_argv(tree, build_dir, colls, jobs, arch)
    env = dict(os.environ, CCACHE_DIR=str(paths.cache_dir("ccache")))

    def run(argv: list[str]) -> int:
        with log_file.open("a") as out:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            return procs.run_group(argv, cwd=tree, stdout=out, stderr=subprocess.STDOUT,
                                   env=env, heartbeat=procs.log_heartbeat(
                                       f"building the selftests ({' '.join(colls)})",
                                       log_file)).returncode

    # The uapi headers of this tree, which the tests include (KHDR_INCLUDES points at
    # O/usr/include); the kernel's own configured build dir makes this quick.
    if run(["make", f"O={build_dir}", *kbuild.make_args(kernel_key, variant, arch),
            f"-j{jobs}", "headers"]):
        _failed(log_file, "the tree's uapi headers (make headers) failed")
    # -k: a test that does not compile (Debian's 6.12.117 mm/khugepaged.c uses KSFT_SKIP
    # without its header) must not take its collection with it. It gets a stand-in that
    # fails saying so; the rest is built, installed and run.
    # (The top-level Makefile's status is 0 when any one collection built: the log says
    # which programs failed.)
    status = run([*selftests[:1], "-k", *selftests[1:], "all"])
    broken = _stand_ins(build_dir, log_file.read_text(errors="replace"))
    if status and not broken:
        _failed(log_file, "selftests build failed")
    if broken:
        log.warning("selftests: %s did not compile; their tests fail and say so (log: %s)",
                    ", ".join(broken), log_file)
    if run([*selftests, f"INSTALL_PATH={install}", "install"]):
        _failed(log_file, "selftests install failed")
    broken_list = _stand_in_names(build_dir)
    if broken_list:
        (install / BUILD_FAILURES).write_text("".join(f"{b}\n" for b in broken_list))
    listed = SelftestInstall(install).collections()
    absent = [c for c in colls if c not in listed]
    if absent:
        _failed(log_file, f"selftests build installed no {', '.join(absent)} (kselftest "
                          "skips a collection that failed to build)")


STAND_IN = "#!/bin/sh\n# vmtest: {name} did not compile\necho 'vmtest: {name} did not " \
           "compile on the host: {error}'\nexit 1\n"


def _stand_ins(build_dir: Path, log_text: str) -> list[str]:
    """For each selftest program make could not build (its "*** [...: TARGET] Error"),
    a script that fails naming the compiler's error; returns their names."""
    made = []
    for target in sorted(set(re.findall(r"\*\*\* \[[^\]]*?: (\S+)\] Error", log_text))):
        path = Path(target)
        if not path.is_absolute() or not path.is_relative_to(build_dir / "kselftest") \
                or path.exists():
            continue
        errors = re.findall(rf"^{re.escape(path.name)}\.c:\d+:\d+: error: (.*)$", log_text,
                            re.M)
        error = (errors[0] if errors else "see the selftests build log").replace("'", "")
        path.write_text(STAND_IN.format(name=path.name, error=error))
        path.chmod(0o755)
        made.append(path.name)
    return made


def _stand_in_names(build_dir: Path) -> list[str]:
    return sorted(p.name for p in (build_dir / "kselftest").rglob("*")
                  if p.is_file() and p.stat().st_size < 512
                  and p.read_bytes().startswith(b"#!/bin/sh\n# vmtest: "))


def _failed(log_file: Path, what: str) -> None:
    tail = kconfig.tail_lines(log_file, 25)
    hint = "read the first error in the log"
    if "cannot find -l" in tail or "No such file or directory" in tail:
        hint = ("a library or header the tests need is missing: bash scripts/setup-host.sh "
                "installs libcap-dev, libnuma-dev, liburing-dev")
    raise BuildError(what, log_path=log_file, log_tail=tail, hint=hint)


def require_install(path: Path) -> SelftestInstall:
    """A user's own kselftest install (--kselftest-dir)."""
    install = SelftestInstall(path)
    if not install.tests():
        raise MissingRequirement(f"{path} holds no kselftest-list.txt",
                                 hint="pass the INSTALL_PATH of `make -C "
                                      "tools/testing/selftests TARGETS=mm install`")
    return install
