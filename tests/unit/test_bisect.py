import pytest

from vmtest import bisect, cli
from vmtest.errors import ConfigError


@pytest.mark.parametrize("doc,code", [
    ({"verdict": "ok", "metrics": {"m": 3}}, bisect.GOOD),
    ({"verdict": "ok", "metrics": {"m": 30}}, bisect.BAD),
    ({"verdict": "kernel-crash", "metrics": {}}, bisect.BAD),
    ({"verdict": "hang"}, bisect.BAD),
    ({"verdict": "infrastructure", "error": "QEMU died"}, bisect.SKIP),
    ({"verdict": "ok", "metrics": {}}, bisect.SKIP),
])
def test_judge(doc, code):
    assert bisect.judge(doc, "m", 10)[0] == code


def _git(tree, *args):
    import subprocess
    return subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def history(tmp_path):
    """A tiny kernel-shaped git tree with three commits: A (tag good) - B - C (tag bad)."""
    tree = tmp_path / "linux"
    (tree / "mm").mkdir(parents=True)
    (tree / "Makefile").write_text("VERSION = 6\n")
    _git(tree, "init", "-q", "-b", "main")
    for name in ("A", "B", "C"):
        (tree / "mm" / "swap.c").write_text(f"/* {name} */\n")
        _git(tree, "add", ".")
        _git(tree, "commit", "-q", "-m", name)
    _git(tree, "tag", "good", "HEAD~2")
    _git(tree, "tag", "bad", "HEAD")
    return tree


@pytest.mark.parametrize("good, bad, message", [
    ("goood", "bad", "'goood' is not a commit of"),
    ("bad", "good", "--good bad is not an ancestor of --bad good"),
    ("good", "good", "are the same commit"),
])
def test_bisect_endpoints_are_checked_before_git_is_touched(history, good, bad, message):
    with pytest.raises(ConfigError, match=message):
        bisect.check_endpoints(history, good, bad)
    # Nothing started: no bisection left for the user to reset.
    assert not (history / ".git" / "BISECT_START").exists()


@pytest.mark.fault("bisect: --good and --bad the other way round, or a mistyped ref",
                   verdict="(no bisection)", exit="2",
                   message="vmtest: error: --good X is not an ancestor of --bad Y fix: ... "
                           "the other way round? / 'REF' is not a commit of TREE",
                   kept="the tree: no bisection started")
def test_reversed_endpoints_from_the_command_line_exit_2(history, capsys):
    assert cli.main(["bisect", "--tree", str(history), "--good", "bad", "--bad", "good",
                     "--scenario", "cma-stress", "--metric", "m", "--threshold", "1"]) == 2
    err = capsys.readouterr().err
    assert "not an ancestor" in err and "other way round" in err


@pytest.mark.fault("bisect: a step fails inside vmtest (error or bug)", verdict="skip",
                   exit="125 (git bisect: skip, never bad)",
                   message="vmtest: error: ... / internal error: ...",
                   kept="the bisection goes on")
def test_a_step_that_fails_in_vmtest_is_skip_never_bad(history, monkeypatch, capsys):
    """git bisect run reads 1-127 but 125 as bad: a vmtest error or bug is 125."""
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(bisect, "step", broken)
    assert cli.main(["bisect-step", "--tree", str(history), "--scenario", "cma-stress",
                     "--metric", "m", "--threshold", "1"]) == 125
    monkeypatch.setattr(bisect, "step",
                        lambda *a, **k: (_ for _ in ()).throw(ConfigError("bad input")))
    assert cli.main(["bisect-step", "--tree", str(history), "--scenario", "cma-stress",
                     "--metric", "m", "--threshold", "1"]) == 125
    assert "bad input" in capsys.readouterr().err
