"""The dmesg parser on logs recorded from real vmtest guests (tests/data/logs)."""

from pathlib import Path

import pytest

from vmtest.channel.console import find_crash
from vmtest.collect import dmesg, tracefs

LOGS = Path(__file__).resolve().parents[1] / "data" / "logs"


def _read(name: str) -> str:
    return (LOGS / name).read_text(errors="replace")


def test_hotplug_summaries_unpatched_drain_per_retry():
    report = dmesg.parse(_read("6.1-unpatched-hotplug.dmesg"))
    ops = report.ops("offline_pages")
    assert [o["seq"] for o in ops] == [1, 2, 3, 4]
    assert ops[0]["start_pfn"] == 0x100000 and ops[0]["end_pfn"] == 0x108000
    assert all(o["ret"] == 0 for o in ops)
    assert all(o["drains"] >= o["migrate_calls"] + 1 for o in ops)
    assert report.seq_gaps() == [] and report.dump_mismatch() == 0
    assert report.splats == []


def test_hotplug_summaries_patched_drain_once():
    ops = dmesg.parse(_read("6.1-patched-hotplug.dmesg")).ops("offline_pages")
    assert len(ops) == 4 and all(o["drains"] == 1 for o in ops)


def test_panic_console_log_gives_panic_splat_with_stack():
    text = _read("6.1-panic-sysrq.console.log")
    report = dmesg.parse(text)
    assert [s.kind for s in report.splats] == ["panic"]
    assert report.splats[0].title == "sysrq triggered crash"
    assert any("sysrq_handle_crash" in frame for frame in report.splats[0].stack)
    crash = find_crash(text.encode())
    assert crash is not None and crash.title.startswith("Kernel panic - not syncing")


def test_seq_gap_and_dump_mismatch_reveal_lost_lines():
    lines = _read("6.1-unpatched-hotplug.dmesg").splitlines()
    kept = [ln for ln in lines if "seq=2 " not in ln]
    report = dmesg.parse("\n".join(kept))
    assert report.seq_gaps() == [(1, 3)]
    announced = "\n".join(kept).replace("dumps=0 us=", "dumps=3 us=", 1)
    assert dmesg.parse(announced).dump_mismatch() == 3


@pytest.mark.parametrize("prefix", ["", "[   12.345678] ", "4,1234,5678901,-;", "<4>"])
def test_prefixes_and_dump_attribution(prefix):
    # A dump in the exact shape mm/debug.c __dump_page() prints on 6.1 (anon page).
    block = [
        "vmtest-mm: migrate_fail reason=contig_range pfn=0x41a2c rc=-11 pass=3",
        "page:00000000b7a4c4ea refcount:3 mapcount:1 mapping:0000000000000000 index:0x7f0 "
        "pfn:0x41a2c",
        "memcg:ffff888003e1c000",
        "anon flags: 0x4000000000080034(uptodate|lru|active|swapbacked|zone=1)",
        "raw: 4000000000080034 ffffea0001068b48 ffffea0001068b08 ffff888003d1a001",
        "page dumped because: fail to migrate",
    ]
    report = dmesg.parse("\n".join(prefix + line for line in block))
    assert len(report.dumps) == 1
    dump = report.dumps[0]
    assert (dump.pfn, dump.refcount, dump.mapcount, dump.error) == (0x41a2c, 3, 1, -11)
    assert dump.kind == "anon" and dump.mapped and dump.extra_refs == 2
    assert report.attribution_table()[0]["state"] == "active,lru,swapbacked,uptodate"
    assert report.dumps_by_reason() == {"fail to migrate": 1}


def test_shmem_dump_6_12_format_and_hotplug_lines():
    text = "\n".join([
        "migrating pfn 10a3f0 failed ret:-11",
        "page: refcount:2 mapcount:0 mapping:00000000d4a1b2c3 index:0x1f pfn:0x10a3f0",
        "aops:shmem_aops ino:3 dentry name:\"lru-stress.1.0\"",
        "flags: 0x100000000040014(uptodate|lru|swapbacked|node=0|zone=2)",
        "page dumped because: migration failure",
        "failed to isolate pfn 10a400",
        "do_migrate_range: 12 callbacks suppressed",
        "cma: cma_alloc: reserved: alloc failed, req-size: 16384 pages, ret: -16",
    ])
    report = dmesg.parse(text)
    dump = report.dumps[0]
    assert dump.kind == "shmem" and not dump.mapped and dump.extra_refs == 2
    assert dump.error == -11 and dump.reason == "migration failure"
    assert report.hotplug_isolate_failures == [0x10a400]
    assert report.suppressed == {"do_migrate_range": 12}
    assert report.cma_failures[0]["pages"] == 16384 and report.cma_failures[0]["errno"] == -16


@pytest.mark.parametrize("line,kind,title", [
    ("WARNING: CPU: 1 PID: 77 at mm/page_alloc.c:5525 __alloc_pages+0x1a/0x30", "warning",
     "mm/page_alloc.c:5525 __alloc_pages+0x1a/0x30"),
    # a page fault: its Oops line follows
    ("BUG: kernel NULL pointer dereference, address: 0000000000000000", "oops",
     "kernel NULL pointer dereference, address: 0000000000000000"),
    ("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [lru-stress:80]", "soft-lockup",
     "soft lockup - CPU#0 stuck for 22s! [lru-stress:80]"),
    ("INFO: task kworker/0:1:12 blocked for more than 120 seconds.", "hung-task",
     "task kworker/0:1:12 blocked for more than 120 seconds."),
    ("rcu: INFO: rcu_preempt self-detected stall on CPU", "rcu-stall",
     "rcu_preempt self-detected stall on CPU"),
    ("BUG: KASAN: use-after-free in migrate_folio+0x1/0x2", "kasan",
     "KASAN: use-after-free in migrate_folio+0x1/0x2"),
    ("Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008",
     "oops", "Unable to handle kernel NULL pointer dereference at virtual address "
             "0000000000000008"),
    ("Internal error: Oops: 96000005 [#1] PREEMPT SMP", "oops",
     "Internal error: Oops: 96000005 [#1] PREEMPT SMP"),
    ("BUG: KFENCE: use-after-free read in f+0x1/0x2", "kfence",
     "KFENCE: use-after-free read in f+0x1/0x2"),
    ("Kernel attempted to read user page (8) - exploit attempt? (uid: 0)", "oops",
     "Kernel attempted to read user page (8) - exploit attempt? (uid: 0)"),
    ("UBSAN: shift-out-of-bounds in mm/swap.c:12:3", "ubsan",
     "shift-out-of-bounds in mm/swap.c:12:3"),
])
def test_splat_kinds(line, kind, title):
    splats = dmesg.parse(f"[    1.000000] {line}\n").splats
    assert [(s.kind, s.title) for s in splats] == [(kind, title)]


def test_trace_parser_on_recorded_trace():


    parsed = tracefs.parse_trace(_read("6.1-cma.trace"))
    assert parsed["events"] == {"mm_migrate_pages": 3, "cma_alloc_finish": 2}
    assert parsed["migrate_by_reason"]["contig_range"]["succeeded"] == 96
    assert parsed["cma_alloc_failed"] == 0 and parsed["lost_events"] == 0


def test_cma_dumps_unpatched_recorded():
    report = dmesg.parse(_read("6.1-unpatched-cma.dmesg"))
    assert report.dumps_by_reason() == {"fail to migrate": 105}
    assert len({d.pfn for d in report.dumps}) == 3
    # every dump follows its migrate_fail line and carries its error code
    assert len(report.migrate_fails) == 105 and all(d.error == -11 for d in report.dumps)
    table = report.attribution_table()
    assert table[0]["kind"] == "shmem" and table[0]["extra_refs"] == 3
    busy = [o for o in report.ops("alloc_contig_range") if o["ret"] == -16]
    assert len(busy) == 7
    assert report.dump_mismatch() == 0 and report.seq_gaps() == []


def test_cma_patched_recorded_has_no_failures():
    report = dmesg.parse(_read("6.1-patched-cma.dmesg"))
    ops = report.ops("alloc_contig_range")
    assert len(ops) == 30 and all(o["ret"] == 0 for o in ops)
    assert report.dumps == [] and all(o["drains"] >= 1 for o in ops)


def test_trace_parser_counts_function_tracer_lines():


    text = (_read("6.1-cma.trace") + "\n"
            "              sh-80      [001] .....    21.3: lru_add_drain_all "
            "<-__alloc_contig_migrate_range\n"
            "              sh-80      [001] .....    21.4: migrate_pages <-do_migrate_range\n")
    parsed = tracefs.parse_trace(text)
    assert parsed["functions"] == {"lru_add_drain_all": 1, "migrate_pages": 1}
    assert parsed["events"]["mm_migrate_pages"] == 3


def test_6_12_dump_format_recorded():
    """6.12 prints "page: refcount:..." (no pointer) and "dentry name(?):"."""
    report = dmesg.parse(_read("6.12-unpatched-cma.dmesg"))
    assert report.dumps_by_reason() == {"fail to migrate": 70}
    first = report.dumps[0]
    assert (first.pfn, first.refcount, first.mapcount, first.kind) == (0x353EE, 3, 0, "shmem")
    assert "locked" in first.flags  # 6.12 dumps folios retried while still locked
    assert [o["ret"] for o in report.ops("alloc_contig_range")].count(-16) == 5
    assert report.dump_mismatch() == 0 and report.seq_gaps() == []
    patched = dmesg.parse(_read("6.12-patched-cma.dmesg"))
    assert patched.dumps == [] and all(o["ret"] == 0 for o in patched.ops("alloc_contig_range"))


def test_wrapped_ring_buffer_is_reported():
    text = _read("6.1-patched-cma.dmesg")
    assert dmesg.parse(text).to_dict()["loss"]["ring_buffer_wrapped"] is False
    wrapped = "\n".join(text.splitlines()[40:])
    assert dmesg.parse(wrapped).to_dict()["loss"]["ring_buffer_wrapped"] is True


def test_recorded_warning_has_title_rip_and_call_trace():
    """A real WARN from a 6.1 guest (LKDTM's WARNING, tests/data/logs)."""
    report = dmesg.parse(_read("6.1-lkdtm-warning.dmesg"))
    assert [s.kind for s in report.splats] == ["warning"]
    splat = report.splats[0]
    assert splat.title == "drivers/misc/lkdtm/bugs.c:85 lkdtm_WARNING+0xd/0x10"
    assert splat.stack[:2] == ["lkdtm_WARNING+0xd/0x10", "direct_entry+0xaa/0xc0"]
    assert splat.timestamp == 7.08685
    assert report.starts_at_boot and not report.dumps


def test_shmem_page_recognised_without_kallsyms_all():
    """Recorded from a seed run of a kernel built without CONFIG_KALLSYMS_ALL: dump_page()
    prints the aops as an address; the swapbacked flag still says shmem."""
    report = dmesg.parse(_read("6.1-unpatched-cma-seed-nokallsymsall.dmesg"))
    # the excerpt ends inside a sixth block: a dump without its reason line
    assert report.dumps_by_reason() == {"fail to migrate": 5, "": 1}
    assert {d.aops for d in report.dumps} == {"0xffffffff818191a0"}
    assert {d.kind for d in report.dumps} == {"shmem"}
    assert {(d.extra_refs, d.error, d.mapped) for d in report.dumps} == {(3, -11, False)}


def _unpatched_block(pfn_line_index: int = 0) -> list[str]:
    """The first migrate_fail + dump_page block of the recorded unpatched 6.1 log."""
    lines = _read("6.1-unpatched-cma.dmesg").splitlines()
    start = next(i for i, ln in enumerate(lines) if "migrate_fail" in ln)
    end = next(i for i in range(start, len(lines)) if "page dumped because" in lines[i])
    return lines[start:end + 1]


def test_other_cpus_lines_inside_a_dump_block_are_parsed():
    block = _unpatched_block()
    summary = ("[   30.862300] vmtest-mm: op=alloc_contig_range seq=99 start_pfn=0x1 "
               "end_pfn=0x2 ret=0 drains=1 migrate_calls=1 passes=1 failed_pages=0 dumps=0 us=1")
    report = dmesg.parse("\n".join(block[:3] + [summary] + block[3:]))
    assert [s["seq"] for s in report.summaries] == [99]
    assert len(report.dumps) == 1
    dump = report.dumps[0]
    assert dump.kind == "shmem" and dump.error == -11 and "swapbacked" in dump.flags


def test_a_block_whose_end_was_lost_does_not_swallow_the_next():
    block = _unpatched_block()
    truncated = block[:3]  # migrate_fail, head, aops: the rest was lost
    nxt = [ln.replace("rc=-11", "rc=-16") for ln in block]
    report = dmesg.parse("\n".join(truncated + nxt))
    # The cut block is a dump without a reason, of its own lines; the next is whole.
    assert [(d.reason, d.error, d.aops) for d in report.dumps] == [
        ("", -11, "shmem_aops"), ("fail to migrate", -16, "shmem_aops")]
    assert report.dumps_by_reason() == {"": 1, "fail to migrate": 1}
    # A reason line further than 32 lines on belongs to some other block.
    report = dmesg.parse("\n".join(block[:-1] + ["[   31.0] filler"] * 40 + block[-1:]))
    assert [d.reason for d in report.dumps] == [""]


def test_a_splat_stack_stops_at_the_next_splat():
    text = "\n".join([
        "[    1.000000] INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
        "[    1.000001]  __schedule+0x2a/0x90",
        "[    1.000002] WARNING: CPU: 0 PID: 1 at mm/migrate.c:10 migrate_pages+0x1/0x2",
        "[    1.000003] RIP: 0010:migrate_pages+0x1/0x2",
        "[    1.000004]  ? alloc_contig_range+0x3/0x4",
        "[    1.000005] ---[ end trace 0000000000000000 ]---",
        "[    1.000006]  unrelated_frame+0x5/0x6",
    ])
    splats = dmesg.parse(text).splats
    assert [(s.kind, s.stack) for s in splats] == [
        ("hung-task", ["__schedule+0x2a/0x90"]),
        ("warning", ["migrate_pages+0x1/0x2", "alloc_contig_range+0x3/0x4"]),
    ]


def test_garbled_summary_is_counted_and_left_out():
    """Two console lines run together: a field that is not a number. It must not break
    the report, the seq check or the metrics; it is counted as lost."""
    text = ("[ 1.0] vmtest-mm: op=offline_pages seq=1 drains=2 dumps=0 us=5\n"
            "[ 2.0] vmtest-mm: op=offline_pages seq=2 drains=2 dumps=0us=5\n"
            "[ 3.0] vmtest-mm: op=offline_pages seq=3 drains=1 dumps=1 us=7\n")
    report = dmesg.parse(text)
    loss = report.to_dict()["loss"]
    assert loss["garbled_summaries"] == 1
    assert loss["seq_gaps"] == [(1, 3)]
    assert loss["dump_mismatch"] == 1
    assert [op["seq"] for op in report.ops("offline_pages")] == [1, 3]


def test_cma_alloc_latency_from_recorded_trace():
    """cma_alloc() from its start to its finish event (an unpatched quick run, 6 busy
    retries): every allocation paired, the retries inside their allocation."""
    text = _read("6.1-unpatched-cma-alloc-timing.trace")
    parsed = tracefs.parse_trace(text)
    stamps = {"start": [], "finish": []}
    for line in text.splitlines():
        for kind in stamps:
            if f": cma_alloc_{kind}:" in line:
                stamps[kind].append(float(line.split(":")[0].split()[-1]))
    pairs = zip(stamps["start"], stamps["finish"], strict=True)
    durations = sorted((f - s) * 1000 for s, f in pairs)
    assert len(durations) == 30 and parsed["events"]["cma_alloc_busy_retry"] == 6
    spread = parsed["cma_alloc_ms"]
    assert spread["count"] == 30
    assert spread["median"] == pytest.approx((durations[14] + durations[15]) / 2, abs=1e-3)
    assert spread["max"] == pytest.approx(durations[-1], abs=1e-3)
    assert tracefs.parse_trace(_read("6.1-cma.trace"))["cma_alloc_ms"] is None  # no starts


def _all_logs() -> list[str]:
    data = LOGS.parent
    return [p.read_text(errors="replace").replace("\r", "")
            for folder in ("logs", "dmesg-corpus", "dmesg-heldout")
            for p in sorted((data / folder).glob("*")) if p.suffix in (".log", ".dmesg", ".trace")]


def test_normalize_finds_every_line_it_must_touch():
    """logprefix.normalize() hands only the lines one regex pass finds to _line(); it must
    give what _line() on every line gives (normalize_by_line), on every recorded and
    public log and on their lines behind every prefix form, one after another."""
    import random

    from vmtest.collect import logprefix

    texts = _all_logs()
    for text in texts:
        assert logprefix.normalize(text) == logprefix.normalize_by_line(text)
    lines = [line for text in texts for line in text.split("\n")]
    prefixes = ["", " ", "\t", "<4>", "<12345>", "6,1,2,-;", "[    1.000000] ", "[    1.000000]",
                "[    1.000000@3] ", "[T12] ", "[  C1] ", "[1:swapper:0] ", "> ", ">> ",
                "kernel: ", "host kernel: ", "[  +0.001000] ", "[<    0.001000>] ",
                "[    3.000000 <    0.100000>] ", "Nov 29 12:00:00 host kernel: ",
                "2026-11-29T12:00:00+01:00 host kernel: ", "12 ", "kern  :warn  : ",
                "[Mon Nov 29 12:00:00 2026] ", "[Nov29 12:00] ", "sh# [    2.000000] "]
    rnd = random.Random(25)
    for _ in range(400):
        sample = ["".join(rnd.choice(prefixes) for _ in range(rnd.randrange(4)))
                  + rnd.choice(lines) for _ in range(rnd.randrange(1, 20))]
        text = "\n".join(sample)
        assert logprefix.normalize(text) == logprefix.normalize_by_line(text), sample


def test_hung_task_in_io_wait_is_one():
    """kernel/hung_task.c names a task waiting for I/O "blocked in I/O wait for more than"
    (2026); both forms are hung tasks."""
    from vmtest.collect import splats

    for line in ("INFO: task bash:123 blocked for more than 120 seconds.",
                 "INFO: task dd:456 blocked in I/O wait for more than 120 seconds."):
        found = splats.classify(line)
        assert found is not None and found[0] == "hung-task", line


def test_a_checkers_warning_blames_its_caller():
    """A WARNING from lib/refcount.c is about the caller's reference count: the culprit
    is the first frame that is not the checker or report machinery (the lines are
    constructed for this unit, after the form of a 6.1 refcount warning)."""
    from vmtest.collect import splats

    text = "\n" + "\n".join([
        "[   1.000000] refcount_t: underflow; use-after-free.",
        "[   1.000001] WARNING: CPU: 0 PID: 1 at lib/refcount.c:28"
        " refcount_warn_saturate+0xd8/0xe0",
        "[   1.000002] RIP: 0010:refcount_warn_saturate+0xd8/0xe0",
        "[   1.000003] Call Trace:",
        "[   1.000004]  <TASK>",
        "[   1.000005]  blkg_free_workfn+0x3d/0x90",
        "[   1.000006]  process_one_work+0x1c7/0x380"])
    start = text.index("WARNING")
    end = text.index("\n", start)
    line = text[start:end]
    (splat,) = splats.events(text, [(end, line, 1.000001)], [2])
    assert splat.kind == "warning" and splat.culprit == "blkg_free_workfn"


def test_summary_json_is_json_dumps_of_summary_dict():
    """`vmtest dmesg --json` writes summary_json(), which writes each page state's part
    of the dump records once: the same text as json.dumps() of summary_dict(), on every
    recorded and public log, and on a report whose dumps and values are of every kind."""
    import json

    for text in _all_logs():
        report = dmesg.parse(text)
        assert report.summary_json({"file": "x"}) == \
            json.dumps({"file": "x", **report.summary_dict()})
    report = dmesg.parse(_read("6.1-unpatched-cma.dmesg"))
    report.dumps += [dmesg.Dump("", None, None, None, None, timestamp=float("inf")),
                     dmesg.Dump("r\u00e9ason \"q\"", 0x10, -1, 0, "(null)", ["a\\b"], "\u00e4",
                                True, -12, 1e-7, "(____ptrval____)")]
    assert report.summary_json() == json.dumps(report.summary_dict())


def _json_both_ways(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, bool]:
    """summary_json() of `text` scanned as it is (_parse_large(), as a large log is) and
    normalised first, both without unwrapping (which only a short log is given), and
    whether the first way was taken."""
    monkeypatch.setattr(dmesg, "_WRAP_MAX_TEXT", -2)
    monkeypatch.setattr(dmesg, "_PLAIN_MIN", 1 << 62)
    general = dmesg.parse(text).summary_json()
    monkeypatch.setattr(dmesg, "_PLAIN_MIN", 0)
    taken = []
    real = dmesg._parse_large
    monkeypatch.setattr(dmesg, "_parse_large", lambda *a: taken.append(real(*a)) or taken[-1])
    plain = dmesg.parse(text).summary_json()
    return plain, general, len(taken) == 1 and taken[0] is not None


def test_a_log_scanned_as_it_is_reads_as_normalised(monkeypatch):
    """A large log is scanned without normalising where no line needs it (dmesg._SCAN_PLAIN
    checks each line on the way; any line that needs it sends the log through normalising):
    the same report either way, on every recorded and public log and on their lines
    behind every prefix form -- also inside a dump_page() block."""
    import random

    texts = _all_logs()
    taken = 0
    for text in texts:
        plain, general, fast = _json_both_ways(text, monkeypatch)
        assert plain == general
        taken += fast
    assert taken >= len(texts) // 3  # the recorded guest logs and most dmesg pastes
    lines = [line for text in texts for line in text.split("\n")]
    block = [line for line in lines if "page dumped because" in line][:1] or ["x"]
    prefixes = ["", "", "", " ", "\t", "<4>", "6,1,2,-;", "[    1.000000] ", "[    1.000000]",
                "[    1.000000@3] ", "[T12] ", "> ", "kernel: ", "[  +0.001000] ",
                "Nov 29 12:00:00 host kernel: ", "12 ", "kern  :warn  : ",
                "sh# [    2.000000] ", "[    1.000000] [T1] "]
    rnd = random.Random(2025)
    kept = 0
    for _ in range(300):
        sample = [rnd.choice(lines) for _ in range(rnd.randrange(1, 30))]
        if rnd.random() < 0.5:  # a dump_page() block's lines, one of them behind a prefix
            head = next((i for i, line in enumerate(lines) if "page:" in line), 0)
            sample = lines[head:head + 8] + block + sample
        at = rnd.randrange(len(sample))
        sample[at] = rnd.choice(prefixes) + sample[at]
        plain, general, fast = _json_both_ways("\n".join(sample), monkeypatch)
        assert plain == general, sample
        kept += fast
    assert 0 < kept < 300  # both ways were taken
