"""Which cached kernel a `vmtest run` names, answered without reading the config again.

Finding the kernel means loading the experiment (YAML, the scenario catalog, the build
stage: ~0.1 s of imports and parsing) and hashing what goes into the build -- before QEMU
can start, on every `vmtest run -- CMD`. The answer depends only on files: the config,
its fragments and patches, the Debian source package (dpkg's database and the tarball),
the compiler, and vmtest's own code that turns a config into a cache key. It is
remembered in ~/.cache/vmtest/resolved.json with the identity (inode, size, times) of
each of those files and used while none has changed and the image is still in the cache.
A source tree's identity is its content (kernel/source.py): its kernels are resolved in
full every time."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from vmtest import arch as archs
from vmtest import hostcmd

if TYPE_CHECKING:
    from vmtest.kernel.build import BuildSpec

# vmtest's code between a config and a cache key: an edit in a checkout resolves anew.
CODE = ("config.py", "kernel/build.py", "kernel/kconfig.py", "kernel/source.py",
        "kernel/images.py", "kernel_choice.py", "kernel/resolved.py", "arch.py")


STORE = hostcmd.StampedStore("resolved.json", keep=64)


def question(*words: object) -> str:
    """The key: what the command line said (relative paths mean the current folder's)
    and where programs come from."""
    return json.dumps([os.getcwd(), os.environ.get("PATH", ""), *map(str, words)])


def lookup(key: str) -> Path | None:
    """The image remembered for the question, if nothing it depends on changed."""
    entry = STORE.get(key)
    if entry is None:
        return None
    image = Path(str(entry.get("image")))
    return image if image.is_file() and (image.parent / "meta.json").is_file() else None


def depends_on(spec: BuildSpec, config: Path | None) -> list[Path] | None:
    """Every file the spec's cache key was computed from; None when that is not a set of
    files (a source tree)."""
    from vmtest.kernel.build import all_fragments
    from vmtest.kernel.source import DPKG_STATUS, DebianSource

    if not isinstance(spec.source, DebianSource):
        return None
    gcc = shutil.which(archs.get(spec.arch).gcc)
    if gcc is None:
        return None
    package = Path(__file__).resolve().parents[1]
    return [*([config.resolve()] if config else []),
            *(f.path.resolve() for f in all_fragments(spec)),
            *(p.resolve() for p in spec.patches),
            DPKG_STATUS, spec.source.tarball, Path(os.path.realpath(gcc)),
            *(package / name for name in CODE)]


def snapshot(spec: BuildSpec, config: Path | None) -> list[list[object]] | None:
    """The stamps of what the spec was made from, taken before the build (which may take
    minutes: a file edited meanwhile must not be remembered as built)."""
    files = depends_on(spec, config)
    return None if files is None else hostcmd.stamps(files)


def remember(key: str, stamps: list[list[object]] | None, image: Path) -> None:
    if stamps is not None:
        STORE.put(key, stamps, image=str(image))
