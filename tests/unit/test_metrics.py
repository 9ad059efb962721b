"""Metric extraction (vmtest/collect/metrics.py) on recorded real guest output
(tests/data/metrics/README.md, tests/data/logs/): each source, and the infrastructure
error for what the guest does not have. Expected values are counted independently of the
code under test (grep-like counts over the same files)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vmtest.collect import metrics
from vmtest.collect.metrics import MetricDef, MetricUnavailable, Observations

DATA = Path(__file__).resolve().parents[1] / "data"
REC = DATA / "metrics"
LOGS = DATA / "logs"


def _snap(label: str, files: dict[str, str | None] | None = None) -> dict:
    text = ("### vmstat\n" + (REC / f"6.1-cma-stress.vmstat-{label}.txt").read_text()
            + "### meminfo\n" + (REC / f"6.1-cma-stress.meminfo-{label}.txt").read_text())
    for path, body in (files or {}).items():
        text += f"### file {path}\n" + ("### unreadable\n" if body is None else body + "\n")
    return metrics.parse_snapshot(text + "### end\n")


def _vmstat(label: str) -> dict[str, int]:
    lines = (REC / f"6.1-cma-stress.vmstat-{label}.txt").read_text().splitlines()
    return {k: int(v) for k, v in (line.split() for line in lines)}


@pytest.fixture(scope="module")
def obs() -> Observations:
    return Observations(stdout=(REC / "6.1-cma-stress.stdout.txt").read_text(),
                        stderr="", exit_status=0,
                        dmesg=(LOGS / "6.1-unpatched-cma.dmesg").read_text(),
                        trace=(LOGS / "6.1-unpatched-cma-alloc-timing.trace").read_text(),
                        before=_snap("before"), after=_snap("after"))


def test_stdout_pattern_reductions(obs):
    text = obs.stdout
    oks = [int(x) for x in re.findall(r"vmtest-alloc i=\d+ ok=(\d)", text)]
    assert len(oks) == 30
    pat = re.compile(r"vmtest-alloc i=\d+ ok=(\d)")
    for how, want in (("count", 30), ("sum", sum(oks)), ("last", oks[-1]), ("first", oks[0]),
                      ("min", min(oks)), ("max", max(oks))):
        assert metrics.extract(MetricDef("m", "stdout", pattern=pat, reduce=how), obs) == want
    free = [int(x) for x in re.findall(r"post:\d+ .*?MemFree_kib=(\d+)", text)]
    m = MetricDef("free", "stdout", pattern=re.compile(r"post:\d+ .*?MemFree_kib=(\d+)"),
                  reduce="median")
    assert len(free) == 30
    assert metrics.extract(m, obs) == (sorted(free)[14] + sorted(free)[15]) / 2


def test_stdout_without_the_value_is_an_infrastructure_error_not_none(obs):
    m = MetricDef("alloc_ms", "stdout", pattern=re.compile(r"alloc_ms=([0-9.]+)"))
    with pytest.raises(MetricUnavailable) as exc:
        metrics.extract(m, obs)
    assert "alloc_ms" in str(exc.value) and exc.value.exit_code == 3
    # a count of nothing is 0, a value
    assert metrics.extract(MetricDef("n", "stdout", pattern=re.compile(r"alloc_ms=([0-9.]+)"),
                                     reduce="count"), obs) == 0


def test_a_group_that_is_not_a_number_is_named(obs):
    m = MetricDef("x", "stdout", pattern=re.compile(r"vmtest-step (\S+)"))
    with pytest.raises(MetricUnavailable, match="pre:0"):
        metrics.extract(m, obs)


def test_json_lines():
    # The command's stdout of a benchmark that prints JSON objects (unit input, made
    # here): nested keys, lines that are not JSON skipped.
    text = 'start\n{"alloc": {"ms": 1.5}, "ok": true}\nnoise {\n{"alloc": {"ms": 2.5}}\n'
    o = Observations(stdout=text)
    assert metrics.extract(MetricDef("ms", "stdout", json_key="alloc.ms", reduce="sum"), o) == 4.0
    assert metrics.extract(MetricDef("ms", "stdout", json_key="alloc.ms"), o) == 2.5
    with pytest.raises(MetricUnavailable):  # a bool is not a number
        metrics.extract(MetricDef("ok", "stdout", json_key="ok"), o)


def test_exit_status(obs):
    assert metrics.extract(MetricDef("rc", "exit"), obs) == 0
    assert metrics.extract(MetricDef("rc", "exit"), Observations(exit_status=3)) == 3
    with pytest.raises(MetricUnavailable):
        metrics.extract(MetricDef("rc", "exit"), Observations())


def test_vmstat_delta_before_after(obs):
    before, after = _vmstat("before"), _vmstat("after")
    for counter in ("pgmigrate_success", "compact_isolated", "cma_alloc_success", "pgfault"):
        assert metrics.extract(MetricDef("m", "vmstat", counter=counter), obs) \
            == after[counter] - before[counter]
    assert after["cma_alloc_success"] - before["cma_alloc_success"] == 30
    assert metrics.extract(MetricDef("m", "vmstat", counter="nr_free_pages", take="before"),
                           obs) == before["nr_free_pages"]
    assert metrics.extract(MetricDef("m", "vmstat", counter="nr_free_pages", take="after"),
                           obs) == after["nr_free_pages"]


def test_unknown_vmstat_counter_is_an_infrastructure_error_naming_it(obs):
    with pytest.raises(MetricUnavailable) as exc:
        metrics.extract(MetricDef("m", "vmstat", counter="compact_stal"), obs)
    text = exc.value.render()
    assert "compact_stal" in text and "compact_stall" in text  # the close names
    assert exc.value.exit_code == 3


def test_meminfo(obs):
    def field(label: str, name: str) -> int:
        text = (REC / f"6.1-cma-stress.meminfo-{label}.txt").read_text()
        return int(re.search(rf"^{re.escape(name)}:\s+(\d+) kB", text, re.M).group(1))

    assert metrics.extract(MetricDef("m", "meminfo", field_name="CmaFree"), obs) == \
        field("after", "CmaFree") - field("before", "CmaFree")
    assert metrics.extract(MetricDef("m", "meminfo", field_name="MemTotal", take="after"),
                           obs) == field("after", "MemTotal") == 977524
    with pytest.raises(MetricUnavailable, match="HugePages_Totl"):
        metrics.extract(MetricDef("m", "meminfo", field_name="HugePages_Totl"), obs)


# The CMA area's sysfs counter as the same two snapshots read it (their cma-sysfs
# sections: "alloc_pages_success 0" before, "alloc_pages_success 983040" after).
CMA_FILE = "/sys/kernel/mm/cma/reserved/alloc_pages_success"


def test_file_before_after_delta():
    o = Observations(before=_snap("before", {CMA_FILE: "0"}),
                     after=_snap("after", {CMA_FILE: "983040"}))
    assert metrics.extract(MetricDef("m", "file", path=CMA_FILE, take="delta"), o) == 983040
    assert metrics.extract(MetricDef("m", "file", path=CMA_FILE, take="after"), o) == 983040
    assert metrics.extract(MetricDef("m", "file", path=CMA_FILE, take="before"), o) == 0


def test_file_pattern_and_errors():
    meminfo = (REC / "6.1-cma-stress.meminfo-after.txt").read_text()
    o = Observations(before=_snap("before", {"/proc/meminfo": meminfo, "/sys/x": None}),
                     after=_snap("after", {"/proc/meminfo": meminfo, "/sys/x": None}))
    m = MetricDef("free", "file", path="/proc/meminfo", take="after",
                  pattern=re.compile(r"MemFree:\s+(\d+)"))
    assert metrics.extract(m, o) == int(re.search(r"MemFree:\s+(\d+)", meminfo).group(1))
    with pytest.raises(MetricUnavailable, match="not a number"):
        metrics.extract(MetricDef("m", "file", path="/proc/meminfo", take="after"), o)
    with pytest.raises(MetricUnavailable, match="could not be read"):
        metrics.extract(MetricDef("m", "file", path="/sys/x", take="after"), o)


def test_snapshot_script_round_trip_keeps_multiline_files():
    script = metrics.snapshot_script(("/proc/buddyinfo", "/sys/kernel/mm/x"))
    assert "cat /proc/buddyinfo 2>/dev/null || echo '### unreadable'" in script
    parsed = metrics.parse_snapshot("### vmstat\nnr_free_pages 5\n### file /proc/buddyinfo\n"
                                    "Node 0, zone DMA 1 2\nNode 0, zone DMA32 3 4\n"
                                    "### file /sys/kernel/mm/x\n### unreadable\n### end\n")
    assert parsed["files"] == {"/proc/buddyinfo": "Node 0, zone DMA 1 2\nNode 0, zone DMA32 3 4",
                               "/sys/kernel/mm/x": None}
    assert parsed["vmstat"] == {"nr_free_pages": 5}


def test_dmesg_pattern_dump_reason_and_summaries(obs):
    text = obs.dmesg
    want = len(re.findall(r"page dumped because: fail to migrate$", text, re.M))
    assert want > 0
    pat = re.compile(r"page dumped because: fail to migrate")
    assert metrics.extract(MetricDef("d", "dmesg", pattern=pat), obs) == want
    assert metrics.extract(MetricDef("d", "dmesg", dump_reason="fail to migrate"), obs) == want
    ops = re.findall(r"vmtest-mm: op=alloc_contig_range .*? drains=(\d+)", text)
    assert metrics.extract(MetricDef("c", "dmesg", summary_op="alloc_contig_range",
                                     summary_field="count"), obs) == len(ops)
    assert metrics.extract(MetricDef("c", "dmesg", summary_op="alloc_contig_range",
                                     summary_field="drains", reduce="sum"), obs) \
        == sum(int(x) for x in ops)
    with pytest.raises(MetricUnavailable, match="no op=offline_pages summary"):
        metrics.extract(MetricDef("c", "dmesg", summary_op="offline_pages",
                                  summary_field="drains"), obs)


def test_dmesg_counts_only_after_the_scenario_mark(obs):
    text = obs.dmesg
    pat = re.compile(r"Linux version")
    assert metrics.extract(MetricDef("d", "dmesg", pattern=pat), obs) == 1
    marked = Observations(dmesg=text + f"[ 99.0] {metrics.DMESG_MARK}\n[ 99.1] Linux version x\n")
    assert metrics.extract(MetricDef("d", "dmesg", pattern=pat), marked) == 1
    assert metrics.extract(MetricDef("d", "dmesg", dump_reason="fail to migrate"), marked) == 0


def test_dmesg_splats():
    text = (LOGS / "6.1-lkdtm-warning.dmesg").read_text()
    o = Observations(dmesg=text)
    warnings = len(re.findall(r"WARNING: CPU: \d+ PID: \d+ at ", text))
    assert warnings > 0
    assert metrics.extract(MetricDef("s", "dmesg", splats="warning"), o) == warnings
    assert metrics.extract(MetricDef("s", "dmesg", splats="any"), o) >= warnings
    assert metrics.extract(MetricDef("s", "dmesg", splats="oops"), o) == 0


def test_tracefs_count_and_latency(obs):
    lines = [line for line in obs.trace.splitlines() if not line.startswith("#")]
    starts = [line for line in lines if " cma_alloc_start:" in line]
    assert len(starts) == 30
    count = MetricDef("n", "tracefs", event="cma/cma_alloc_start")
    assert metrics.extract(count, obs) == 30
    assert metrics.extract(MetricDef("n", "tracefs", event="migrate/mm_migrate_pages"), obs) \
        == sum(1 for line in lines if " mm_migrate_pages:" in line)
    # latency: each start to the same task's next finish, in ms
    spans = []
    opened: dict[str, float] = {}
    for line in lines:
        task = line.split("[")[0].strip()
        when = float(re.search(r"(\d+\.\d+):", line).group(1))
        if " cma_alloc_start:" in line:
            opened[task] = when
        elif " cma_alloc_finish:" in line and task in opened:
            spans.append((when - opened.pop(task)) * 1000)
    lat = MetricDef("ms", "tracefs", begin="cma/cma_alloc_start", end="cma/cma_alloc_finish",
                    reduce="max")
    assert metrics.extract(lat, obs) == pytest.approx(max(spans))
    assert metrics.extract(MetricDef("ms", "tracefs", begin="cma/cma_alloc_start",
                                     end="cma/cma_alloc_finish", reduce="count"), obs) == 30


def test_tracefs_latency_of_nothing_is_none_and_lost_events_are_an_error(obs):
    none = MetricDef("ms", "tracefs", begin="compaction/mm_compaction_begin",
                     end="compaction/mm_compaction_end")
    assert metrics.extract(none, obs) is None
    lossy = Observations(trace="# entries-in-buffer/entries-written: 10/25   #P:2\n")
    with pytest.raises(MetricUnavailable, match="dropped 15"):
        metrics.extract(MetricDef("n", "tracefs", event="cma/cma_alloc_start"), lossy)


def test_extract_all_in_declared_order(obs):
    defs = (MetricDef("a", "exit"), MetricDef("b", "vmstat", counter="cma_alloc_success"))
    assert list(metrics.extract_all(defs, obs).items()) == [("a", 0), ("b", 30)]
