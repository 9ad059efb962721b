"""A local tree's identity covers everything that goes into a build (issue 13): no stale
kernel can come out of the cache."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vmtest.errors import ConfigError
from vmtest.kernel.source import LocalTree, content_digest


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VMTEST_CACHE", str(tmp_path / "cache"))


def _tree(root: Path) -> Path:
    (root / "mm").mkdir(parents=True)
    (root / "arch/x86/mm").mkdir(parents=True)
    (root / "Makefile").write_text("VERSION = 6\n")
    (root / "mm/swap.c").write_text("int a;\n")
    (root / "arch/x86/mm/fault.c").write_text("int f;\n")
    return root


def _git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c",
                           "user.email=t@t", *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    tree = _tree(tmp_path / "linux")
    (tree / ".gitignore").write_text("*.o\n")
    _git(tree, "init", "-q", "-b", "main")
    _git(tree, "add", ".")
    _git(tree, "commit", "-q", "-m", "base")
    return tree


def test_git_tree_identity_sees_changes_and_new_files(repo: Path) -> None:
    tree = LocalTree(repo)
    clean = tree.identity()
    assert clean.endswith("+clean")
    (repo / "mm/new.c").write_text("int n;\n")  # untracked, not ignored: built
    with_new = tree.identity()
    assert with_new != clean
    (repo / "mm/new.c").write_text("int n = 1;\n")  # its content counts
    assert tree.identity() != with_new
    (repo / "mm/new.c").unlink()
    (repo / "mm/swap.o").write_text("object")  # ignored: not part of the build's input
    assert tree.identity() == clean
    (repo / "arch/x86/mm/fault.c").write_text("int f = 2;\n")  # a tracked change
    assert tree.identity() not in (clean, with_new)


def test_a_ref_is_its_commit_and_a_mistyped_ref_says_so(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD").strip()
    assert LocalTree(repo, "main").identity() == f"git:{head}"
    with pytest.raises(ConfigError, match="'mian' is not a commit of") as exc:
        LocalTree(repo, "mian").identity()
    assert "spelling" in (exc.value.hint or "")


def test_a_tree_without_git_is_its_files_content(tmp_path: Path) -> None:
    root = _tree(tmp_path / "plain")
    first = content_digest(root)
    assert content_digest(root) == first  # cached by (size, mtime): same answer
    path = root / "arch/x86/mm/fault.c"  # arch/ too, not only mm/ and include/
    path.write_text("int f = 3;\n")
    changed = content_digest(root)
    assert changed != first
    # A file touched (new mtime, same bytes) is hashed again and changes nothing.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert content_digest(root) == changed
    (root / "mm/swap.o").write_bytes(b"\0" * 10)  # a build output: not an input
    assert content_digest(root) == changed
    assert LocalTree(root).identity() == f"tree:{root}:{changed}"


@pytest.mark.fault("several processes use a kernel source first at once (fresh cache, "
                   "pytest-xdist, parallel builds), one killed mid-extraction before",
                   verdict="(no fault: one extracts, the others wait)", exit="0",
                   message="(none)", kept="one tree; the killed one's leftover removed")
def test_concurrent_first_use_of_a_ref_extracts_once(repo: Path, tmp_path: Path) -> None:
    """Issue 28: the source was extracted before the build lock into a fixed `.tmp`
    name; several processes at once on a fresh cache removed each other's folders."""
    import threading

    from vmtest import paths

    src = paths.cache_dir("src")
    rev = _git(repo, "rev-parse", "HEAD").strip()
    stale = src / f".git-{rev[:16]}.12345.tmp"  # a killed extraction's leftover
    stale.mkdir(parents=True)
    got: list[Path] = []
    errors: list[BaseException] = []

    def use() -> None:
        try:
            got.append(LocalTree(repo, "main").tree())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(got)) == 1
    tree = got[0]
    assert (tree / "mm/swap.c").read_text() == "int a;\n"
    assert sorted(p.name for p in src.iterdir()) == [f".{tree.name}.lock", tree.name]
