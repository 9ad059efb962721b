"""scripts/kernel-experiment.py: a tree's own commits become the candidate's series."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from vmtest import config

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kernel-experiment.py"


def _module():
    spec = importlib.util.spec_from_file_location("kernel_experiment", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _git(tree: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t",
                    *args], check=True, capture_output=True)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    tree = tmp_path / "linux"
    tree.mkdir()
    _git(tree, "init", "-q", "-b", "main")
    (tree / "mm").mkdir()
    (tree / "mm" / "swap.c").write_text("int a;\n")
    _git(tree, "add", ".")
    _git(tree, "commit", "-q", "-m", "base")
    _git(tree, "tag", "v0")
    for n in (1, 2):
        (tree / "mm" / "swap.c").write_text(f"int a = {n};\n")
        _git(tree, "commit", "-q", "-am", f"mm: change {n}")
    return tree


def test_commits_since_base_are_the_candidate_series(tree: Path, tmp_path: Path) -> None:
    path = _module().write(tree, "v0", "HEAD", ["kselftest", "cma-stress"], "quick", 2,
                           tmp_path / "exp")
    exp = config.load(path)
    kernel = exp.kernel("tree")
    base = kernel.variant("baseline")
    cand = kernel.variant("candidate")
    assert list(base.series) == []
    assert [p.name for p in cand.series] == ["0001-mm-change-1.patch",
                                             "0002-mm-change-2.patch"]
    assert exp.matrix is not None and exp.matrix.repetitions == 2
    assert list(exp.matrix.variants) == ["baseline", "candidate"]
    assert exp.scenario("kselftest").metrics[0] == "tests_fail"


def test_bad_ref_and_empty_range_are_one_line_errors(tree: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    mod = _module()
    assert mod.main(["--tree", str(tree), "--base", "v9", "--out", str(tmp_path / "e")]) == 2
    assert "'v9' is not a commit" in capsys.readouterr().err
    assert mod.main(["--tree", str(tree), "--base", "HEAD", "--out", str(tmp_path / "e")]) == 2
    assert "no commits between HEAD and HEAD" in capsys.readouterr().err
