"""kernel/resolved: `vmtest run`'s kernel remembered while nothing it was made from changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmtest.kernel import kconfig, resolved
from vmtest.kernel.build import BuildSpec
from vmtest.kernel.source import DebianSource, LocalTree


@pytest.fixture
def made(tmp_path: Path) -> tuple[BuildSpec, Path, Path, Path]:
    fragment = tmp_path / "extra.config"
    fragment.write_text("CONFIG_CMA=y\n")
    patch = tmp_path / "fix.patch"
    patch.write_text("--- a/x\n+++ b/x\n")
    config = tmp_path / "exp.yaml"
    config.write_text("kernels: []\n")
    image = tmp_path / "kernels" / "abc" / "vmlinux"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"\x7fELF")
    (image.parent / "meta.json").write_text("{}")
    spec = BuildSpec(source=DebianSource("6.1"), fragments=(kconfig.load_fragment(fragment),),
                     patches=(patch,), variant="patched")
    return spec, config, image, patch


def test_remembered_until_an_input_changes(made: tuple[BuildSpec, Path, Path, Path]) -> None:
    spec, config, image, patch = made
    key = resolved.question("run", config, None, "patched")
    assert resolved.lookup(key) is None
    resolved.remember(key, resolved.snapshot(spec, config), image)
    assert resolved.lookup(key) == image
    assert resolved.lookup(resolved.question("run", config, None, "unpatched")) is None
    patch.write_text("--- a/x\n+++ b/x\n@@ -1 +1 @@\n")
    assert resolved.lookup(key) is None


@pytest.mark.parametrize("change", ["config", "fragment", "image", "meta"])
def test_each_input_and_the_image_count(made: tuple[BuildSpec, Path, Path, Path],
                                        change: str) -> None:
    spec, config, image, _ = made
    key = resolved.question("run", config)
    resolved.remember(key, resolved.snapshot(spec, config), image)
    {"config": lambda: config.write_text("kernels: [] # edited\n"),
     "fragment": lambda: spec.fragments[0].path.write_text("CONFIG_CMA=n\n"),
     "image": image.unlink,
     "meta": (image.parent / "meta.json").unlink}[change]()
    assert resolved.lookup(key) is None


def test_a_file_edited_during_the_build_is_not_remembered_as_built(
        made: tuple[BuildSpec, Path, Path, Path]) -> None:
    spec, config, image, patch = made
    key = resolved.question("run", config)
    stamps = resolved.snapshot(spec, config)  # taken before the build
    patch.write_text("edited while make ran\n")
    resolved.remember(key, stamps, image)
    assert resolved.lookup(key) is None


def test_vmtest_code_and_the_compiler_are_inputs(made: tuple[BuildSpec, Path, Path, Path]) -> None:
    spec, config, _, _ = made
    names = [Path(n).name for n, _ in resolved.snapshot(spec, config) or []]
    assert {"build.py", "kconfig.py", "config.py", "status",
            "linux-source-6.1.tar.xz"} <= set(names)
    assert any(n.startswith(("gcc", "x86_64-linux-gnu-gcc")) for n in names)


def test_a_source_tree_is_resolved_every_time(made: tuple[BuildSpec, Path, Path, Path],
                                              tmp_path: Path) -> None:
    spec, config, image, _ = made
    tree = BuildSpec(source=LocalTree(tmp_path), fragments=spec.fragments)
    assert resolved.snapshot(tree, config) is None
    key = resolved.question("run", tmp_path)
    resolved.remember(key, None, image)
    assert resolved.lookup(key) is None


def test_a_broken_store_is_a_miss(made: tuple[BuildSpec, Path, Path, Path]) -> None:
    spec, config, image, _ = made
    key = resolved.question("run", config)
    resolved.remember(key, resolved.snapshot(spec, config), image)
    store = resolved.STORE.path
    for text in ("{broken", json.dumps({key: {"stamps": 3}}), json.dumps([1])):
        store.write_text(text)
        assert resolved.lookup(key) is None


def test_the_store_keeps_the_most_recent_answers(made: tuple[BuildSpec, Path, Path, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spec, config, image, _ = made
    monkeypatch.setattr(resolved.STORE, "keep", 3)
    stamps = resolved.snapshot(spec, config)
    for n in range(5):
        resolved.remember(resolved.question("run", n), stamps, image)
    assert [resolved.lookup(resolved.question("run", n)) for n in range(5)] == [
        None, None, image, image, image]
