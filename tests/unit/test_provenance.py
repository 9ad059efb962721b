"""provenance.describe: what made a run, the tools of the run's own architecture."""

from __future__ import annotations

import shutil

import pytest

from vmtest import arch as archs
from vmtest import provenance


@pytest.mark.parametrize("name", sorted(archs.ARCHES))
def test_a_run_names_the_qemu_and_compiler_of_its_architecture(name):
    target = archs.get(name)
    if shutil.which(target.gcc) is None or shutil.which(target.qemu) is None:
        pytest.skip(f"{target.gcc} or {target.qemu} is not installed here")
    made = provenance.describe(name)
    assert made["gcc"].startswith(target.gcc.rsplit("/", 1)[-1]), made
    assert made["qemu"].startswith("QEMU emulator version"), made
    assert made["vmtest_commit"] and made["host_kernel"]
