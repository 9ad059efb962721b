"""Issue 3: patched vs unpatched on one base, instrumentation live, drains per offline."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vmtest.collect import dmesg as dmesg_parser
from vmtest.qemu.boot import boot


@pytest.mark.parametrize("name", ["patched", "unpatched"])
def test_variant_boots_identifies_itself_and_instrumentation_is_live(variants, name, boot_opts,
                                                                     run_dir, debian_release):
    artifact = variants[name]
    with boot(artifact.image, boot_opts, run_dir) as vm:
        ssh = vm.ssh()
        assert ssh.check_output("uname -r").strip() == f"{debian_release('6.1')}-vmtest-{name}"
        assert f"vmtest@{artifact.key[:16]}" in ssh.check_output("cat /proc/version")
        ssh.check_output("echo 1024 > /sys/kernel/debug/cma/reserved/alloc; "
                         "echo 1024 > /sys/kernel/debug/cma/reserved/free")
        report = dmesg_parser.parse(ssh.check_output("dmesg"))
    ops = report.ops("alloc_contig_range")
    assert len(ops) == 1 and ops[0]["ret"] == 0
    assert ops[0]["end_pfn"] - ops[0]["start_pfn"] == 1024
    # Each variant drains at least once per allocation (lru_cache_disable / migrate_prep).
    assert ops[0]["drains"] >= 1


def test_variants_share_the_tree_and_rebuild_fast(variants):
    patched, unpatched = variants["patched"], variants["unpatched"]
    assert patched.key != unpatched.key
    assert unpatched.meta["patches"] == ["vmtest-instrumentation.patch",
                                         "revert-d479960e44f2-lru-cache-disable.patch"]
    assert patched.meta["source"] == unpatched.meta["source"]
    # The variant built second reused the first's tree and build directory: make
    # compiled only what the revert touches (a cold 6.1 build compiles ~1100 files).
    first, second = sorted((patched, unpatched), key=lambda a: str(a.meta["built_at"]))

    def compiled(artifact):
        return artifact.meta["ccache"]["hits"] + artifact.meta["ccache"]["misses"]

    assert compiled(second) * 5 < compiled(first), (first.meta, second.meta)
    assert second.meta["build_seconds"] * 3 < first.meta["build_seconds"]


def test_offline_drains_once_patched_and_per_retry_unpatched(run_scenario, tmp_path):
    """Hot-add, online movable, load, offline: the summary lines tell the variants apart."""
    per_variant = {}
    for name in ("patched", "unpatched"):
        doc = run_scenario(name, "hotplug-offline", tmp_path / name)
        assert doc["verdict"] == "ok", doc.get("error")
        blocks = [b for b in doc["blocks"] if b.get("summary")]
        assert blocks and all(b["offlined"] for b in blocks)
        per_variant[name] = blocks
    for block in per_variant["patched"]:
        # lru_cache_disable() drains once; nothing drains on retries.
        assert block["drains"] == 1, block
    for block in per_variant["unpatched"]:
        # lru_add_drain_all() on every pass of the retry loop, including the final scan.
        assert block["drains"] >= block["migrate_calls"] + 1, block
    assert any(b["migrate_calls"] >= 1 for b in per_variant["unpatched"])
    # drains= is the offlining task's; drains_all= every task's, so never fewer.
    assert all(b["drains_all"] >= b["drains"] for v in per_variant.values() for b in v)
    assert sum(b["drains"] for b in per_variant["unpatched"]) > \
        sum(b["drains"] for b in per_variant["patched"])


@pytest.mark.fault("patch that does not apply", verdict="(no run)", exit="3",
                   message="vmtest: error: patch P does not apply to Debian linux-source-6.1 "
                           "(variant V) ... Hunk #1 FAILED", kept="every kernel already built")
def test_broken_patch_is_reported_with_patch_hunk_and_base(tmp_path, variants):
    broken = tmp_path / "broken.patch"
    broken.write_text("--- a/mm/swap.c\n+++ b/mm/swap.c\n@@ -1,3 +1,3 @@\n no such\n-line\n"
                      "+LINE\n context\n")
    proc = subprocess.run([sys.executable, "-m", "vmtest.cli", "build", "--source", "debian:6.1",
                           "--patch", str(broken), "--variant", "broken"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3
    assert "broken.patch does not apply to Debian linux-source-6.1" in proc.stderr
    assert re.search(r"Hunk #1 FAILED", proc.stderr)
    # Everything already built is still there and still a cache hit.
    for artifact in variants.values():
        assert artifact.image.is_file()


REF_612 = Path(__file__).resolve().parents[2] / "configs" / "lru-migration-6.12.yaml"


@pytest.mark.parametrize("name", ["patched", "unpatched"])
def test_6_12_variants_build_boot_and_report(name, boot_opts, run_dir, debian_release):
    from vmtest import config
    from vmtest.kernel import build as kbuild

    k612 = config.load(REF_612).kernel("6.12")
    artifact = kbuild.build(k612.build_spec(k612.variant(name)))
    with boot(artifact.image, boot_opts, run_dir) as vm:
        ssh = vm.ssh()
        assert ssh.check_output("uname -r").strip() == f"{debian_release('6.12')}-vmtest-{name}"
        ssh.check_output("echo 1024 > /sys/kernel/debug/cma/reserved/alloc; "
                         "echo 1024 > /sys/kernel/debug/cma/reserved/free")
        text = ssh.check_output("dmesg")
    report = dmesg_parser.parse(text)
    ops = report.ops("alloc_contig_range")
    assert len(ops) == 1 and ops[0]["ret"] == 0 and ops[0]["drains"] >= 1
    assert re.search(r"cma: Reserved 256 MiB", text)
