"""`vmtest dmesg` on recorded real logs."""

import io
import json
from pathlib import Path

from vmtest import cli
from vmtest.collect import dmesg

LOGS = Path(__file__).resolve().parents[1] / "data" / "logs"
CORPUS = LOGS.parent / "dmesg-corpus"


def test_text_report_of_an_unpatched_cma_run(capsys):
    log = LOGS / "6.1-unpatched-cma.dmesg"
    assert cli.main(["dmesg", str(log)]) == 0
    out = capsys.readouterr().out
    report = dmesg.parse(log.read_text())
    ops = report.ops("alloc_contig_range")
    failed = sum(1 for s in ops if s["ret"] != 0)
    assert f"op=alloc_contig_range: {len(ops)} calls, {failed} failed" in out
    n = report.dumps_by_reason()["fail to migrate"]
    assert f'dump_page(): "fail to migrate" {n};' in out
    top = report.attribution_table()[0]
    assert f"{top['count']:>6}  fail to migrate        shmem" in out


def test_json_document_per_file(capsys):
    logs = [LOGS / "6.1-unpatched-hotplug.dmesg", LOGS / "6.12-unpatched-cma.dmesg"]
    assert cli.main(["dmesg", "--json", *map(str, logs)]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["file"] for d in docs] == list(map(str, logs))
    hotplug = dmesg.parse(logs[0].read_text()).ops("offline_pages")
    assert docs[0]["ops"]["offline_pages"]["count"] == len(hotplug)
    assert docs[0]["ops"]["offline_pages"]["drains_total"] == sum(s["drains"] for s in hotplug)
    assert docs[1]["dumps_by_reason"] == dmesg.parse(logs[1].read_text()).dumps_by_reason()


def test_fail_on_splat_only_for_crashes(capsys):
    panic, warning = str(LOGS / "6.1-panic-sysrq.console.log"), \
        str(LOGS / "6.1-lkdtm-warning.dmesg")
    assert cli.main(["dmesg", panic]) == 0
    assert cli.main(["dmesg", "--fail-on-splat", panic]) == 1
    assert cli.main(["dmesg", "--fail-on-splat", warning]) == 0
    out = capsys.readouterr().out
    assert "splat panic line 7 at 3.974104: sysrq triggered crash in sysrq_handle_crash()" in out
    assert "splat warning line 240 at 7.086850: drivers/misc/lkdtm/bugs.c:85 " \
        "lkdtm_WARNING+0xd/0x10 in lkdtm_WARNING()" in out


def test_json_has_one_record_per_event(capsys):
    """A public log (tests/data/dmesg-corpus): a 4.x OOM report in a mail, glued to
    user-space output and wrapped at 78 columns; each OOM is one record with its fields."""
    log = CORPUS / "lkft-5.7-i386-oom-glued-wrapped.log"
    assert cli.main(["dmesg", "--json", str(log)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["prefixes"]["glued"] == 1 and doc["excerpt"] is True
    ooms = [e for e in doc["events"] if e["type"] == "splat"]
    assert [(e["kind"], e["line"], e["crash"]) for e in ooms] == [
        ("oom", 11, False), ("oom", 177, False), ("oom", 340, False)]
    assert ooms[2]["title"].startswith("klogd invoked oom-killer: gfp_mask=0xc2cc0(")
    assert ooms[2]["culprit"] == "__kmalloc_reserve"
    assert all(e["parts"][0].startswith("Out of memory: Killed process") for e in ooms[:2])


def test_failure_lines_counted_per_range(capsys):
    log = CORPUS / "luxonis-rae-ros-48-contig-busy-reltime.log"
    assert cli.main(["dmesg", str(log)]) == 0
    out = capsys.readouterr().out
    assert "(line prefixes: relative 24); an excerpt: it does not start at boot" in out
    assert "alloc_contig_range busy: 23 lines: [0xa5880, 0xa58bf) x6, [0xa5680, 0xa56de) x5" \
        in out


def test_stdin_and_lost_lines(capsys, monkeypatch):
    lines = (LOGS / "6.1-unpatched-cma.dmesg").read_text().splitlines()
    kept = [line for line in lines if "seq=5 " not in line]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(kept)))
    assert cli.main(["dmesg", "-"]) == 0
    assert "LINES LOST: 1 gaps in the summaries' seq" in capsys.readouterr().out


def test_unreadable_file_is_a_usage_error(capsys, tmp_path):
    assert cli.main(["dmesg", str(tmp_path / "nope.log")]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "nope.log" in err
