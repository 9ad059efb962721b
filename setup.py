"""The one compiled part of vmtest: the dmesg parser's line scan (vmtest/collect/dmesg.py
falls back to its regex scan when the extension is missing); and the commit a wheel is
built from, baked into it (vmtest/provenance.py reads git in a checkout, this file
elsewhere). Everything else is in pyproject.toml."""

import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildPyWithCommit(build_py):
    """build_py, plus vmtest/_commit.txt: `git describe` of the checkout (none: omitted)."""

    def run(self) -> None:
        super().run()
        try:
            proc = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40",
                                   "--exclude=*"], cwd=Path(__file__).parent,
                                  capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            return
        editable = getattr(self, "editable_mode", False)  # a checkout: git answers
        if proc.returncode == 0 and proc.stdout.strip() and not editable:
            target = Path(self.build_lib) / "vmtest" / "_commit.txt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(proc.stdout.strip() + "\n")


setup(
    cmdclass={"build_py": BuildPyWithCommit},
    ext_modules=[
        Extension("vmtest.collect._dmesgscan", ["vmtest/collect/_dmesgscan.c"],
                  extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
                  optional=True),
    ],
)
