"""A kernel WARNING while a test runs: without the marker it fails the test (the plugin
shows the splat and the log); with @pytest.mark.vmtest_expect_splat it is the test."""

from __future__ import annotations

import pytest

LKDTM = "/sys/kernel/debug/provoke-crash/DIRECT"


@pytest.mark.vmtest_expect_splat
def test_lkdtm_warning_is_reported(vm):
    vm.run(f"echo WARNING > {LKDTM}")
    splats = vm.dmesg().splats
    assert [s.kind for s in splats] == ["warning"]
    assert splats[0].stack and splats[0].stack[0].startswith("lkdtm_WARNING")
