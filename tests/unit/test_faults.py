"""Faults that need no guest (issue 16): the host, the inputs and the results directory
misbehaving. Each ends as one message with a documented exit code, and nothing already
done is lost. The `fault` marks make docs/reliability.md."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from vmtest import cli, config, matrix
from vmtest.errors import ConfigError, MissingRequirement
from vmtest.results import store

REF = Path(__file__).resolve().parents[2] / "configs" / "lru-migration.yaml"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VMTEST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.fault("malformed YAML", verdict="(no run)", exit="2",
                   message="vmtest: error: FILE:L: broken YAML at line L, column C: ... fix: "
                           "fix the YAML syntax", kept="nothing started")
def test_malformed_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kernels:\n  k: {source: debian:6.1\n")
    assert cli.main(["matrix", str(bad), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: broken YAML at line 3" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.fault("experiment file: a metric name the scenario does not produce",
                   verdict="(no run)", exit="2",
                   message="vmtest: error: FILE:L: scenarios.cma-stress.metrics[0]: scenario "
                           "cma-stress produces no metric 'X' (did you mean Y?) fix: its "
                           "metrics: ...", kept="nothing started")
def test_metric_name_typo(tmp_path, capsys):
    bad = tmp_path / "exp.yaml"
    bad.write_text("kernels:\n  k: {variants: {a: {}, b: {}}}\nscenarios:\n  cma-stress:\n"
                   "    metrics: [fail_to_migrate_dump]\n"
                   "matrix: {variants: [a, b], scenarios: [cma-stress]}\n")
    assert cli.main(["matrix", str(bad), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5: scenarios.cma-stress.metrics[0]: scenario cma-stress produces no " \
           "metric 'fail_to_migrate_dump' (did you mean fail_to_migrate_dumps?)" in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


@pytest.mark.fault("experiment file: unknown key, wrong type, bad pattern or name",
                   verdict="(no run)", exit="2",
                   message="vmtest: error: FILE:L: KEY.PATH: unknown key fix: allowed here: ...",
                   kept="nothing started")
@pytest.mark.parametrize("text,message", [
    ("kernels:\n  k:\n    variants: {a: {sysctls: {}}, b: {}}\n", ":3: kernels.k.variants.a."
     "sysctls: unknown key"),
    ("kernels:\n  k: {variants: {a: {}, b: {}}}\nscenarios:\n  cma-stress:\n"
     "    metrics: [failed_pages]\n    lower_is_better: 'false'\n",
     ":6: scenarios.cma-stress.lower_is_better: expected a boolean (true/false), got string"),
    ("kernels:\n  k: {}\nscenarios:\n  s:\n    run: x\n    metrics:\n"
     "      - {name: m, from: stdout, pattern: 'x=(\\d+'}\n",
     ":7: scenarios.s.metrics[0].pattern: bad pattern"),
    ("kernels:\n  k:\n    variants: {'tést': {}}\n", ":3: kernels.k.variants.tést: variant name"),
])
def test_experiment_file_mistakes(tmp_path, capsys, text, message):
    bad = tmp_path / "exp.yaml"
    bad.write_text(text)
    assert cli.main(["matrix", str(bad), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}{message}" in err and "Traceback" not in err


@pytest.mark.fault("unknown scenario", verdict="(no run)", exit="2",
                   message="vmtest: error: unknown scenario 'nope' fix: available: ...",
                   kept="nothing started")
def test_unknown_scenario(capsys):
    assert cli.main(["run", "--scenario", "nope", "--variant", "patched"]) == 2
    err = capsys.readouterr().err
    assert "unknown scenario 'nope'" in err and "cma-stress" in err


@pytest.mark.fault("results directory in use by a second matrix", verdict="(no run)",
                   exit="2", message="vmtest: error: DIR is in use by another vmtest matrix "
                                     "(pid N)", kept="the first matrix's runs, untouched")
def test_two_matrices_on_one_results_directory(tmp_path, capsys):
    exp = config.load(REF)
    first = store.Store(tmp_path / "res")  # the matrix that is running
    first.claim(exp, "quick", force=False)
    try:
        assert cli.main(["matrix", str(REF), "--profile", "quick", "--results",
                         str(tmp_path / "res"), "--resume", "--jobs", "1"]) == 2
        err = capsys.readouterr().err
        assert "is in use by another vmtest matrix" in err
    finally:
        first.release()
    # Once the first is gone, the directory is free again.
    second = store.Store(tmp_path / "res")
    second.lock()
    second.release()


@pytest.mark.fault("host memory too small for --jobs", verdict="(no run)", exit="2",
                   message="vmtest: error: --jobs N: M guests at once need about X GiB (...), "
                           "the host has Y GiB available fix: --jobs K or fewer",
                   kept="nothing claimed")
def test_jobs_beyond_host_memory(tmp_path, capsys):
    assert cli.main(["matrix", str(REF), "--profile", "quick", "--jobs", "100000",
                     "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--jobs 100000: 20 guests at once need about" in err and "the host has" in err
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match=r"--jobs 3: 3 guests at once need about 3.8 GiB") \
            as exc:
        matrix.check_memory(3, 1024, available=2048)
    assert exc.value.hint == "--jobs 1 or fewer (--jobs auto picks it)"
    matrix.check_memory(3, 1024, runs=1, available=2048)  # one run: one guest, fits


@pytest.mark.fault("cache folder not writable", verdict="(no run)",
                   exit="125 (run -- CMD), 3",
                   message="vmtest: error: the cache folder DIR is not writable (...) fix: set "
                           "VMTEST_CACHE to a writable folder", kept="nothing started")
def test_cache_folder_not_writable(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    monkeypatch.setenv("VMTEST_CACHE", str(blocker / "cache"))
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF")
    assert cli.main(["run", "--kernel", str(kernel), "--no-share", "--", "true"]) == 125
    err = capsys.readouterr().err
    assert "is not writable" in err and "VMTEST_CACHE" in err and "Traceback" not in err


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
@pytest.mark.fault("disk full / read-only / no permission while writing results",
                   verdict="(the runs finished before it are kept)", exit="3",
                   message="vmtest: error: No space left on device: FILE fix: free space or "
                           "choose another folder", kept="every run finished before")
def test_host_write_errors_are_one_line_exit_3(monkeypatch, capsys, code):
    def full(args):
        raise OSError(code, "as the host said", "/results/runs/x/result.json")

    monkeypatch.setattr("vmtest.cli.dmesg.cmd_dmesg", full)
    assert cli.main(["dmesg", "x.log"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("vmtest: error: as the host said: /results/runs/x/result.json\n")
    assert "internal error" not in err and "Traceback" not in err


@pytest.mark.fault("busybox missing on the host", verdict="(no run)",
                   exit="125 (run -- CMD), 3",
                   message="vmtest: error: busybox not found on the host (needed in the guest) "
                           "fix: apt-get install busybox-static", kept="nothing started")
def test_missing_busybox(monkeypatch, tmp_path):
    from vmtest.guest import rootfs

    monkeypatch.setitem(rootfs.PROGRAMS, "busybox", (str(tmp_path / "no-busybox"),
                                                     "busybox-static"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingRequirement, match="busybox not found on the host") as exc:
        rootfs.find_program("busybox")
    assert exc.value.hint == "apt-get install busybox-static"
