"""hostcmd: a host command's output is remembered until a file it depends on changes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vmtest import hostcmd


@pytest.fixture
def counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A real program on PATH that counts its runs in a file and prints a data file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    runs, data = tmp_path / "runs", tmp_path / "data"
    data.write_text("v1\n")
    prog = bindir / "answer"
    prog.write_text(f"#!/bin/sh\necho x >> {runs}\ncat {data}\n"
                    f"[ \"$1\" = fail ] && exit 3\nexit 0\n")
    prog.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return runs, data


def _runs(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def test_second_call_is_remembered_until_a_dependency_changes(counter: tuple[Path, Path]) -> None:
    runs, data = counter
    assert hostcmd.output(["answer"], [data]) == (0, "v1\n")
    assert hostcmd.output(["answer"], [data]) == (0, "v1\n")
    assert _runs(runs) == 1
    data.write_text("v2, longer\n")  # size and mtime change
    assert hostcmd.output(["answer"], [data]) == (0, "v2, longer\n")
    assert _runs(runs) == 2


def test_a_replaced_program_runs_again(counter: tuple[Path, Path], tmp_path: Path) -> None:
    runs, data = counter
    hostcmd.output(["answer"], [data])
    prog = tmp_path / "bin" / "answer"
    new = tmp_path / "bin" / "answer.new"
    new.write_text(prog.read_text().replace("cat", "echo new; cat"))
    new.chmod(0o755)
    new.replace(prog)  # a package upgrade: new inode under the same name
    assert hostcmd.output(["answer"], [data]) == (0, "new\nv1\n")
    assert _runs(runs) == 2


def test_arguments_are_part_of_the_key(counter: tuple[Path, Path]) -> None:
    runs, data = counter
    hostcmd.output(["answer", "a"], [data])
    hostcmd.output(["answer", "b"], [data])
    assert _runs(runs) == 2


def test_a_failure_is_never_remembered(counter: tuple[Path, Path]) -> None:
    runs, data = counter
    assert hostcmd.output(["answer", "fail"], [data]) == (3, "v1\n")
    assert hostcmd.output(["answer", "fail"], [data])[0] == 3
    assert _runs(runs) == 2
    with pytest.raises(subprocess.CalledProcessError):
        hostcmd.output(["answer", "fail"], [data], check=True)


def test_a_missing_program_raises_like_subprocess() -> None:
    with pytest.raises(FileNotFoundError):
        hostcmd.output(["vmtest-no-such-program-here"])


def test_a_broken_store_is_ignored(counter: tuple[Path, Path]) -> None:
    runs, data = counter
    hostcmd.output(["answer"], [data])
    (Path(os.environ["VMTEST_CACHE"]) / "hostcmd.json").write_text("{not json")
    assert hostcmd.output(["answer"], [data]) == (0, "v1\n")
    assert _runs(runs) == 2


def test_the_store_keeps_the_most_recent_answers(counter: tuple[Path, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    runs, data = counter
    monkeypatch.setattr(hostcmd.STORE, "keep", 2)
    for word in ("a", "b", "c"):
        hostcmd.output(["answer", word], [data])
    hostcmd.output(["answer", "c"], [data])
    hostcmd.output(["answer", "a"], [data])  # pushed out by b and c: runs again
    assert _runs(runs) == 4
