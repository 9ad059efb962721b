"""The shared working tree: series switching and patch errors (real `patch`, tiny tree)."""

import os
from pathlib import Path

import pytest

from vmtest.errors import PatchError
from vmtest.kernel import build as kbuild
from vmtest.kernel.source import LocalTree

A_PATCH = """\
--- a/mm/a.c
+++ b/mm/a.c
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three
"""
BROKEN = """\
--- a/mm/a.c
+++ b/mm/a.c
@@ -1,3 +1,3 @@
 uno
-dos
+DOS
 tres
"""


@pytest.fixture
def pristine(tmp_path: Path) -> Path:
    tree = tmp_path / "pristine"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "a.c").write_text("one\ntwo\nthree\n")
    (tree / "mm" / "b.c").write_text("b\n")
    (tree / "Makefile").write_text("")
    return tree


def _spec(tree: Path, *patches: Path) -> kbuild.BuildSpec:
    return kbuild.BuildSpec(source=LocalTree(tree), fragments=(), patches=patches,
                            variant="v")


def test_touched_files(tmp_path):
    patch = tmp_path / "p.patch"
    patch.write_text(A_PATCH)
    assert kbuild._touched_files(patch) == {"mm/a.c"}


def test_switching_series_restores_and_reapplies(tmp_path, pristine):
    patch = tmp_path / "p.patch"
    patch.write_text(A_PATCH)
    work = tmp_path / "work"
    work.mkdir()
    log = tmp_path / "log"
    tree = kbuild._prepare_worktree(pristine, work, _spec(pristine, patch), log)
    assert (tree / "mm" / "a.c").read_text() == "one\nTWO\nthree\n"
    assert (pristine / "mm" / "a.c").read_text() == "one\ntwo\nthree\n"  # hard link broken
    # untouched files stay hard links to the pristine tree
    assert os.stat(tree / "mm" / "b.c").st_ino == os.stat(pristine / "mm" / "b.c").st_ino
    before = (tree / "mm" / "a.c").stat().st_mtime_ns
    tree = kbuild._prepare_worktree(pristine, work, _spec(pristine), log)
    assert (tree / "mm" / "a.c").read_text() == "one\ntwo\nthree\n"
    assert (tree / "mm" / "a.c").stat().st_mtime_ns >= before  # make sees the change
    # same series again: nothing to do, file not touched
    mtime = (tree / "mm" / "a.c").stat().st_mtime_ns
    kbuild._prepare_worktree(pristine, work, _spec(pristine), log)
    assert (tree / "mm" / "a.c").stat().st_mtime_ns == mtime


def test_broken_patch_names_patch_and_hunk_and_recovers(tmp_path, pristine):
    good, bad = tmp_path / "good.patch", tmp_path / "bad.patch"
    good.write_text(A_PATCH)
    bad.write_text(BROKEN)
    work = tmp_path / "work"
    work.mkdir()
    log = tmp_path / "log"
    with pytest.raises(PatchError) as exc:
        kbuild._prepare_worktree(pristine, work, _spec(pristine, good, bad), log)
    assert "bad.patch" in str(exc.value) and str(pristine) in str(exc.value)
    assert "Hunk #1 FAILED" in (exc.value.log_tail or "")
    # the tree is usable for another series afterwards
    tree = kbuild._prepare_worktree(pristine, work, _spec(pristine, good), log)
    assert (tree / "mm" / "a.c").read_text() == "one\nTWO\nthree\n"


FUZZY = """\
--- a/mm/a.c
+++ b/mm/a.c
@@ -1,3 +1,3 @@
 ONE
-two
+TWO
 three
"""


def test_a_patch_that_needs_fuzz_does_not_apply(tmp_path, pristine):
    """GNU patch's default would apply this hunk with fuzz 1 (its first context line
    does not match): vmtest applies exactly or says it does not apply."""
    patch = tmp_path / "fuzzy.patch"
    patch.write_text(FUZZY)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(PatchError) as exc:
        kbuild._prepare_worktree(pristine, work, _spec(pristine, patch), tmp_path / "log")
    assert "Hunk #1 FAILED" in (exc.value.log_tail or "")
    assert "without fuzz" in (exc.value.hint or "")
    # an offset is no fuzz: the same hunk two lines further down applies
    (pristine / "mm" / "a.c").write_text("x\ny\none\ntwo\nthree\n")
    patch.write_text(A_PATCH)
    tree = kbuild._prepare_worktree(pristine, work, _spec(pristine, patch), tmp_path / "log")
    assert (tree / "mm" / "a.c").read_text() == "x\ny\none\nTWO\nthree\n"


ESCAPING = """\
--- a/../../outside
+++ b/../../outside
@@ -1 +1 @@
-host file
+patched
"""


@pytest.mark.fault("a patch names a file outside the kernel tree (a/../../x)",
                   verdict="(no build)", exit="2",
                   message="vmtest: error: patch P, line 1: 'a/../../outside' is outside the "
                           "kernel tree fix: a patch's paths are a/PATH and b/PATH inside the "
                           "tree ...",
                   kept="the work tree as it was; nothing outside it touched")
def test_a_patch_outside_the_tree_is_refused_before_anything_is_recorded(tmp_path, pristine):
    from vmtest.errors import ConfigError

    outside = tmp_path / "outside"
    outside.write_text("host file\n")
    patch = tmp_path / "escape.patch"
    patch.write_text(ESCAPING)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ConfigError, match=r"line 1: 'a/\.\./\.\./outside' is outside"):
        kbuild._prepare_worktree(pristine, work, _spec(pristine, patch), tmp_path / "log")
    # a later series switch (what unlinked the file before) leaves it alone too
    kbuild._prepare_worktree(pristine, work, _spec(pristine), tmp_path / "log")
    assert outside.read_text() == "host file\n"


def test_a_series_recorded_with_an_outside_path_does_not_reach_it(tmp_path, pristine):
    """A series.json written before paths were checked is not followed out of the tree."""
    import json

    outside = tmp_path / "outside"
    outside.write_text("host file\n")
    work = tmp_path / "work"
    work.mkdir()
    kbuild._prepare_worktree(pristine, work, _spec(pristine), tmp_path / "log")
    (work / "series.json").write_text(json.dumps({"series": ["x"],
                                                  "files": ["../../outside", "mm/a.c"]}))
    kbuild._prepare_worktree(pristine, work, _spec(pristine), tmp_path / "log")
    assert outside.read_text() == "host file\n"
