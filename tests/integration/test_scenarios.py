"""Issue 4: quick profiles of both scenarios on both 6.1 variants; crash still documented."""

from __future__ import annotations

import json
import re

import pytest

from vmtest.results import document as results


@pytest.mark.parametrize("variant", ["patched", "unpatched"])
@pytest.mark.parametrize("scenario", ["cma-stress", "hotplug-offline"])
def test_quick_profile_document_matches_artifacts(run_scenario, tmp_path, scenario, variant,
                                                  debian_release):
    doc = run_scenario(variant, scenario, tmp_path)
    assert doc["verdict"] == "ok", doc.get("error")
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert results.validate(on_disk) == []
    assert on_disk["identity"]["variant"] == variant
    assert on_disk["identity"]["kernel_release"] == f"{debian_release('6.1')}-vmtest-{variant}"
    dmesg = (tmp_path / "dmesg.txt").read_text(errors="replace")
    summaries = re.findall(r"vmtest-mm: op=(\w+) ", dmesg)
    m = on_disk["metrics"]
    if scenario == "cma-stress":
        # Independent count from the saved raw dmesg.
        assert m["fail_to_migrate_dumps"] == dmesg.count("page dumped because: fail to migrate\n") \
            - dmesg.count("page dumped because: fail to migrate (hotplug)")
        assert m["alloc_contig_range_calls"] == summaries.count("alloc_contig_range") >= 30
        assert m["allocations"] == 30
        assert m["drains"] >= m["alloc_contig_range_calls"]
        assert 0 < m["cma_occupancy_median"] <= 1
    else:
        assert m["blocks"] == summaries.count("offline_pages") == 4
        assert m["blocks_offlined"] == 4
        assert m["drains"] >= m["blocks"]
    assert on_disk["loss"]["seq_gaps"] == [] and on_disk["loss"]["dump_mismatch"] == 0
    assert on_disk["splats"] == []


@pytest.mark.fault("guest panic during a scenario", verdict="kernel-crash",
                   exit="1 (in a matrix: the run's verdict)",
                   message="kernel crash in the guest: sysrq triggered crash",
                   kept="result.json (verdict, error), console.log")
def test_panic_during_scenario_gives_crash_verdict_and_document(run_scenario, tmp_path):
    doc = run_scenario("patched", "cma-stress", tmp_path, fault="panic")
    assert doc["verdict"] == "kernel-crash"
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["verdict"] == "kernel-crash" and "sysrq" in on_disk["error"].lower()
    assert (tmp_path / "console.log").exists()
    assert results.validate(on_disk) == []
