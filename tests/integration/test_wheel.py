"""vmtest installed from its wheel into a fresh virtual environment, used outside the
checkout: the configs, fragments, patches and guest sources come with it (issue 15)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*argv: str | Path, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_wheel_in_a_fresh_venv_has_its_data_and_boots(kernel, tmp_path):
    wheels = tmp_path / "wheels"
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, REPO,
                 cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("vmtest-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")  # pure: nothing compiled (issue 25)
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv, cwd=tmp_path).returncode == 0
    installed = _run(venv / "bin" / "pip", "install", "-q", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"  # no checkout in sight
    elsewhere.mkdir()
    where = _run(venv / "bin" / "python", "-c",
                 "import vmtest.paths as p; print(p.default_config()); print(p.missing_data())",
                 cwd=elsewhere)
    assert str(venv) in where.stdout and where.stdout.strip().endswith("[]"), where
    # the commit it was built from, baked in (build_backend/vmtest_backend.py)
    head = _run("git", "describe", "--always", "--dirty", "--abbrev=40", "--exclude=*",
                cwd=REPO).stdout.strip()
    version = _run(venv / "bin" / "vmtest", "--version", cwd=elsewhere)
    assert head and f"(commit {head})" in version.stdout, version
    # the licence travels with it (PEP 639)
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    doctor = _run(venv / "bin" / "vmtest", "doctor", cwd=elsewhere)
    assert "ok  vmtest data files" in doctor.stdout, doctor.stdout
    # The default experiment loads from the package, and a guest boots with the
    # package's init and stressor.
    boot = _run(venv / "bin" / "vmtest", "run", "--kernel", kernel.directory, "--no-share",
                "--", "uname -r; test -x /usr/bin/lru-stress && echo stressor", cwd=elsewhere)
    assert boot.returncode == 0, boot.stderr[-2000:]
    assert boot.stdout.splitlines() == [kernel.release, "stressor"]
