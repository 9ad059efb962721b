"""The command line's promises: every failure ends as a message and a documented exit
code (vmtest/errors.py), never a traceback; usage errors name the subcommand and the bad
argument; `vmtest run -- CMD` keeps CMD's status apart from its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmtest import cli
from vmtest.cli import run as cli_run
from vmtest.errors import ChannelError, ConfigError, KernelCrash

REF = Path(__file__).resolve().parents[2] / "configs" / "lru-migration.yaml"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VMTEST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("argv,named", [
    (["matrix", "--bogus"], "vmtest matrix: error: unrecognized arguments: --bogus"),
    (["dmesg", "--nope", "x"], "vmtest dmesg: error: unrecognized arguments: --nope"),
    (["run", "--cpus", "x", "--", "true"], "vmtest run: error: argument --cpus: invalid int"),
    (["build", "--jobs", "x"], "vmtest build: error: argument -j/--jobs: invalid int"),
])
def test_usage_errors_name_the_subcommand_and_argument(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert named in capsys.readouterr().err


def test_matrix_bad_jobs_claims_nothing(tmp_path, capsys):
    results = tmp_path / "res"
    assert cli.main(["matrix", str(REF), "--jobs", "foo", "--results", str(results)]) == 2
    assert "--jobs 'foo' is not a whole number" in capsys.readouterr().err
    assert not results.exists()


@pytest.mark.fault("unknown scenario parameter or wrong type", verdict="(no run)",
                   exit="2", message="vmtest: error: scenario S: parameter cpus must be int, got "
                                     "float 2.5", kept="nothing started")
@pytest.mark.parametrize("setting,message", [
    ("count=abc", "parameter count must be int, got str 'abc'"),
    ("cpus=2.5", "parameter cpus must be int, got float 2.5"),
    ("nope=1", "unknown parameter 'nope'"),
])
def test_scenario_parameters_from_the_command_line_are_checked(setting, message, capsys):
    assert cli.main(["run", "--scenario", "cma-stress", "--variant", "patched",
                     "--set", setting]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.fault("a bug in vmtest", verdict="infrastructure", exit="3 (125 for run -- CMD)",
                   message="vmtest: internal error: TypeError: ... (traceback in FILE); please "
                           "report it", kept="the traceback in the cache's logs/")
def test_a_bug_is_one_line_exit_3_and_a_saved_traceback(monkeypatch, capsys, cache):
    def broken(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr("vmtest.cli.dmesg.cmd_dmesg", broken)
    assert cli.main(["dmesg", "x.log"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: TypeError: unsupported operand" in err
    saved = list((cache / "logs").glob("vmtest-bug-*.txt"))
    assert len(saved) == 1 and "Traceback" in saved[0].read_text()


@pytest.mark.parametrize("raised,code", [
    (KernelCrash("kernel crash in the guest: Kernel panic"), 124),
    (ChannelError("SSH connection to the guest was lost"), 125),
    (ConfigError("kernel image /x not found"), 125),
    (RuntimeError("a bug"), 125),
])
def test_run_cmd_keeps_its_own_codes_apart_from_cmds(monkeypatch, raised, code):
    def failing(args, command):
        raise raised

    monkeypatch.setattr(cli_run, "_command_run", failing)
    assert cli.main(["run", "--", "true"]) == code


def test_run_cmd_status_passes_through(monkeypatch):
    monkeypatch.setattr(cli_run, "_command_run", lambda args, command: 3)
    assert cli.main(["run", "--", "exit", "3"]) == 3


def test_copy_specs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.sh").write_text("echo")
    (tmp_path / "odd:name").write_text("x")
    assert cli_run.copies(["t.sh", "t.sh:/opt/t", "odd:name"]) == (
        (tmp_path / "t.sh", "t.sh"), (tmp_path / "t.sh", "/opt/t"),
        (tmp_path / "odd:name", "odd:name"))
    with pytest.raises(ConfigError, match="nope does not exist"):
        cli_run.copies(["nope:/x"])


def _run_args(*argv):
    parser, commands = cli.build_parser()
    return parser.parse_args(["run", *argv, "--", "true"])


def test_the_current_folder_is_shared_by_default_read_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    shares = cli_run.shares(_run_args())
    assert [(s.host, s.writable, s.required) for s in shares] == [(tmp_path, False, False)]
    shares = cli_run.shares(_run_args("--share-rw", "out"))
    assert [(s.host, s.writable, s.required, s.tag) for s in shares] == [
        (tmp_path / "out", True, True, "vmtest0"), (tmp_path, False, False, "vmtest1")]
    assert cli_run.shares(_run_args("--no-share")) == ()
    # Asked for explicitly, the current folder is shared once, and required.
    assert [(s.host, s.required) for s in cli_run.shares(_run_args("--share", "."))] == [
        (tmp_path, True)]
    with pytest.raises(ConfigError, match="not a folder"):
        cli_run.shares(_run_args("--share", "missing"))


@pytest.mark.fault("SIGTERM to a vmtest command", verdict="interrupted", exit="143",
                   message="vmtest: terminated (SIGTERM)", kept="finished runs")
def test_sigterm_is_handled_like_ctrl_c_and_exits_143(monkeypatch, capsys):
    import os
    import signal
    import time

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        return 0

    monkeypatch.setattr("vmtest.cli.dmesg.cmd_dmesg", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["dmesg", "x.log"]) == 143
    assert "terminated (SIGTERM)" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before  # restored for the caller


def test_the_help_states_the_matrix_stagger_the_matrix_uses():
    from vmtest import matrix
    from vmtest.cli import matrix as cli_matrix

    assert cli_matrix.CROWDED_STAGGER_S == matrix.CROWDED_STAGGER_S
    assert matrix.stagger_for(4, cores=2) == matrix.CROWDED_STAGGER_S
    assert matrix.stagger_for(2, cores=2) == 0.0


def test_parsing_loads_no_ssh_qmp_yaml_or_build_stage():
    import subprocess
    import sys

    code = ("import sys; from vmtest import cli; cli.build_parser(); "
            "print(sorted(m for m in ('paramiko', 'yaml', 'qemu.qmp', 'vmtest.kernel.build',"
            " 'vmtest.collect.dmesg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_fetch_with_console_is_refused_before_booting(capsys):
    assert cli.main(["run", "--console", "--fetch", "/root/x", "--", "true"]) == 125
    assert "--fetch needs SSH" in capsys.readouterr().err


def test_the_command_table_names_every_subcommand_and_run_loads_only_its_own(capsys):
    import subprocess
    import sys

    _, commands = cli.build_parser()
    assert sorted(commands) == sorted(cli.COMMANDS)
    assert cli.named_command(["-v", "run", "--", "matrix"]) == "run"
    assert cli.named_command(["--", "run"]) is None
    assert cli.named_command(["nosuch"]) is None
    code = ("import sys; from vmtest import cli; p, c = cli.build_parser(['run', '--', 'true']);"
            " print(sorted(c), sorted(m for m in sys.modules if m.startswith('vmtest.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "['run'] ['vmtest.cli.common', 'vmtest.cli.run']"
    # an unknown command still gets argparse's list of them all
    with pytest.raises(SystemExit) as exited:
        cli.main(["nosuch"])
    assert exited.value.code == 2
    assert "choose from 'matrix', 'report', 'merge'" in capsys.readouterr().err


def test_version_names_the_commit(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    from vmtest import __version__, provenance

    assert out.startswith(f"vmtest {__version__} (commit ")
    assert provenance.commit() in out and provenance.commit() != "unknown"


def test_the_top_level_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out and "125" in out and "over SSH" not in out


def test_doctor_json_is_the_checks(capsys):
    import json

    code = cli.main(["doctor", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert {"python", "python:tarfile", "qemu-system-x86_64"} <= {c["name"] for c in
                                                                  data["checks"]}
    assert code == (0 if data["ready"] else 3)
    assert all(set(c) == {"name", "ok", "detail", "fix", "optional"} for c in data["checks"])


def test_build_json_is_one_object_per_kernel(monkeypatch, tmp_path, capsys):
    import json

    from vmtest.errors import PatchError
    from vmtest.kernel import build as kbuild

    (tmp_path / "meta.json").write_text(json.dumps({"key": "k" * 40, "release": "6.1.0-x"}))
    artifact = kbuild.KernelArtifact.load(tmp_path)

    def fake_build(spec, *, jobs=None, force=False):
        if spec.variant == "unpatched":
            raise PatchError("patch p does not apply")
        return artifact

    monkeypatch.setattr(kbuild, "build", fake_build)
    assert cli.main(["build", "--json"]) == 3
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["kernel"].rsplit("/", 1)[1]: r["ok"] for r in rows} == {"patched": True,
                                                                     "unpatched": False}
    ok = next(r for r in rows if r["ok"])
    assert ok["release"] == "6.1.0-x" and ok["cached"] is True


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_knows_every_command_and_option(shell, capsys):
    pytest.importorskip("shtab")
    assert cli.main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("matrix", "report", "doctor", "completion", "--share-rw", "--scenario"):
        assert word in script, word


def test_bash_completion_completes_a_subcommand_and_an_option(tmp_path, capsys):
    import shutil
    import subprocess

    pytest.importorskip("shtab")
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    cli.main(["completion", "bash"])
    (tmp_path / "vmtest.bash").write_text(capsys.readouterr().out)
    probe = ('source "$1"; COMP_WORDS=(vmtest do); COMP_CWORD=1; _shtab_vmtest; '
             'echo "${COMPREPLY[*]}"; COMP_WORDS=(vmtest run --share-r); COMP_CWORD=2; '
             '_shtab_vmtest; echo "${COMPREPLY[*]}"')
    out = subprocess.run(["bash", "-c", probe, "-", str(tmp_path / "vmtest.bash")],
                         capture_output=True, text=True, timeout=30).stdout.splitlines()
    assert out == ["doctor", "--share-rw"]


@pytest.mark.fault("the reader of vmtest's output goes away (vmtest ... | head)",
                   verdict="(none)", exit="141 (128 + SIGPIPE)", message="(none)",
                   kept="whatever the command wrote or did; no bug report")
def test_a_reader_that_goes_away_is_not_a_bug():
    """`vmtest completion bash | head -c 1`, deterministically: the pipe's reader is gone
    before vmtest writes."""
    import os
    import subprocess
    import sys

    pytest.importorskip("shtab")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "vmtest.cli", "completion", "bash"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.returncode == 141  # 128 + SIGPIPE, as a tool SIGPIPE killed


def test_every_option_of_every_command_has_help_and_every_help_the_exit_codes():
    parser, commands = cli.build_parser(None)
    silent = [(name, a.option_strings or a.dest) for name, p in commands.items()
              for a in p._actions if a.help is None and a.dest != "help"]
    assert silent == []
    for name, command in commands.items():
        assert "exit codes" in command.format_help(), name
