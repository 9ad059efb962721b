import json
from pathlib import Path

import pytest

from vmtest import compare, config, matrix, report, sequential
from vmtest.errors import ConfigError
from vmtest.results.store import Store

REPO = Path(__file__).resolve().parents[2]
REF = REPO / "configs" / "lru-migration.yaml"


@pytest.fixture
def exp():
    return config.load(REF)


def test_expansion_is_interleaved_and_complete(exp):
    runs = matrix.expand(exp, profile="quick", repetitions=3)
    assert len(runs) == 3 * 2 * 2
    assert [r.variant for r in runs[:4]] == ["unpatched", "patched"] * 2
    assert len({r.key for r in runs}) == len(runs)
    assert runs == matrix.expand(exp, profile="quick", repetitions=3)  # deterministic


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_shards_partition_the_runs(exp, n):
    runs = matrix.expand(exp, profile="quick", repetitions=3)
    shards = [matrix.shard(runs, f"{i}/{n}") for i in range(1, n + 1)]
    keys = [r.key for s in shards for r in s]
    assert sorted(keys) == sorted(r.key for r in runs)
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_every_shard_holds_both_variants_of_its_blocks(exp, n):
    """Paired: a shard compares patched and unpatched on one runner, never runner vs
    runner; the blocks keep expand()'s interleaving."""
    runs = matrix.expand(exp, profile="quick", repetitions=4)
    for i in range(1, n + 1):
        part = matrix.shard(runs, f"{i}/{n}")
        assert part, f"shard {i}/{n} is empty"
        blocks: dict[tuple[str, str, int], list[str]] = {}
        for r in part:
            blocks.setdefault((r.kernel, r.scenario, r.repetition), []).append(r.variant)
        assert all(v == ["unpatched", "patched"] for v in blocks.values()), blocks
        assert part == [r for r in runs if r in part]  # the order of the whole matrix


def test_select_scenario_keeps_interleaving(exp):
    runs = matrix.select(matrix.expand(exp, profile="quick", repetitions=3), exp,
                         scenarios=["cma-stress"])
    assert len(runs) == 3 * 2
    assert {r.scenario for r in runs} == {"cma-stress"}
    assert [r.variant for r in runs[:4]] == ["unpatched", "patched"] * 2
    with pytest.raises(ConfigError, match="nope") as err:
        matrix.select(runs, exp, scenarios=["nope"])
    assert "hotplug-offline" in (err.value.hint or "")


@pytest.mark.parametrize("spec", ["0/2", "3/2", "x", "1-2"])
def test_bad_shard(exp, spec):
    with pytest.raises(ConfigError):
        matrix.shard(matrix.expand(exp), spec)


def test_matrix_config_errors(tmp_path):
    text = REF.read_text().replace("scenarios: [cma-stress, hotplug-offline]",
                                   "scenarios: [cma-stress, nope]")
    path = tmp_path / "x.yaml"
    path.write_text(text.replace("6.1/", str(REPO / "kernels/patches/6.1") + "/"))
    with pytest.raises(ConfigError, match=r"matrix.scenarios\[1\]"):
        config.load(path)
    path.write_text(REF.read_text().replace("variants: [unpatched, patched]",
                                            "variants: [unpatched, nope]")
                    .replace("6.1/", str(REPO / "kernels/patches/6.1") + "/"))
    with pytest.raises(ConfigError, match="has no variant 'nope'"):
        config.load(path)


def _doc(variant: str, scenario: str, value: float, verdict: str = "ok") -> dict:
    metrics = {"fail_to_migrate_dumps": value, "allocations": 500, "failed_pages": value * 2,
               "alloc_contig_range_failed": value / 10, "distinct_failed_pfns": value / 7,
               "allocations_failed": 0, "alloc_us_median": 1000.0, "drains": 500,
               "drains_per_offline": value, "offline_seconds_total": 1.0,
               "blocks_timed_out": 0}
    return {"schema": "vmtest-run/1", "run_id": f"{variant}{value}", "verdict": verdict,
            "identity": {"base": "6.1", "variant": variant, "scenario": scenario},
            "metrics": metrics, "splats": [], "operations": [{"dumps": value}]}


def _claimed(exp, tmp_path):
    """A fresh results store for the quick profile, and the matrix's runs."""
    store = Store(tmp_path / "res")
    store.claim(exp, "quick", force=False)
    return store, matrix.expand(exp, profile="quick", repetitions=1)


def _writing_run(log, stamp=lambda run: run.key):
    """A stand-in for a real run: writes an ok document, appends stamp(run) to log."""
    def fake_run(run, run_dir):
        log.append(stamp(run))
        doc = _doc(run.variant, run.scenario, 1.0)
        (run_dir / "result.json").write_text(json.dumps(doc))
        return doc
    return fake_run


def test_store_resume_and_fingerprint(exp, tmp_path):
    store, runs = _claimed(exp, tmp_path)
    calls = []
    fake_run = _writing_run(calls)

    matrix.execute(runs[:2], store, fake_run, jobs=2)
    matrix.execute(runs, store, fake_run, jobs=2)  # the first two are not run again
    assert len(calls) == len(runs) and len(set(calls)) == len(runs)
    lines = (tmp_path / "res" / "index.jsonl").read_text().splitlines()
    assert len(lines) == len(runs)
    with pytest.raises(ConfigError, match="another config or profile"):
        store.claim(exp, "seed", force=False)
    store.claim(exp, "seed", force=True)


@pytest.mark.parametrize("verdict", ["infrastructure", "interrupted"])
def test_infrastructure_failures_and_interrupted_runs_are_retried(exp, tmp_path, verdict):
    store, runs = _claimed(exp, tmp_path)
    d = store.prepare(runs[0])
    (d / "result.json").write_text(json.dumps(_doc(runs[0].variant, runs[0].scenario, 1.0)
                                              | {"verdict": verdict}))
    assert not store.done(runs[0])
    assert store.reconcile(runs) == 0
    (d / "result.json").write_text(json.dumps({"verdict": "kernel-crash"}))
    assert store.done(runs[0])


def test_report_golden(exp, data_dir, update_golden):
    docs = [_doc("unpatched", "cma-stress", v) for v in (400, 380, 420, 390, 410)]
    docs += [_doc("patched", "cma-stress", v) for v in (30, 28, 35, 31, 29)]
    docs += [_doc("unpatched", "hotplug-offline", v) for v in (3, 2, 4)]
    docs += [_doc("patched", "hotplug-offline", v) for v in (1, 1, 1)]
    docs.append(_doc("patched", "hotplug-offline", 0, verdict="kernel-crash")
                | {"error": "kernel crash in the guest: Kernel panic"})
    data = compare.build(exp, docs)
    md = report.markdown(data)
    golden = data_dir / "golden" / "report.md"
    if update_golden:
        golden.write_text(md)
    assert md == golden.read_text()
    cma = data["sections"][0]
    assert cma["headline"].startswith("'fail to migrate' dumps over 500 CMA allocations "
                                      "(median per run): unpatched 400 -> patched 30")
    assert cma["comparisons"][0]["verdict"] == "improved"
    assert data["crashes"] and not data["regressions"]
    junit = report.junit(data)
    n_metrics = sum(len(exp.scenario(s).metrics) for s in exp.matrix.scenarios)
    # A case per metric and per run (with its time); the crashed run fails.
    assert junit.count("<testcase") == n_metrics + len(docs)
    assert junit.count('<failure message="kernel-crash"') == 1
    assert "failures='1' errors='0'" in junit
    assert "<svg" in report.html_page(data)


def test_junit_infrastructure_is_an_error_and_too_few_runs_skipped(exp):
    docs = [_doc("unpatched", "cma-stress", 400), _doc("patched", "cma-stress", 30),
            _doc("patched", "cma-stress", 0, verdict="infrastructure")
            | {"error": "SSH failed: connection refused\nmore"}]
    junit = report.junit(compare.build(exp, docs))
    assert '<error message="infrastructure">SSH failed: connection refused</error>' in junit
    # One run per side decides nothing: skipped, not passed.
    assert '<skipped message="insufficient data">' in junit
    assert "errors='1'" in junit


def test_result_without_index_line_is_reconciled_not_rerun(exp, tmp_path):
    store, runs = _claimed(exp, tmp_path)
    d = store.prepare(runs[0])  # finished, but the process died before indexing it
    (d / "result.json").write_text(json.dumps(_doc(runs[0].variant, runs[0].scenario, 1.0)))
    calls = []
    matrix.execute(runs, store, _writing_run(calls), jobs=1)
    assert runs[0].key not in calls and len(calls) == len(runs) - 1
    assert store.indexed() == {r.key for r in runs}


def _timed_doc(value, minute, verdict="ok"):
    return {"verdict": verdict, "metrics": {"dumps": value},
            "started_at": f"2026-11-26T00:{minute:02d}:00Z",
            "finished_at": f"2026-11-26T00:{minute + 1:02d}:30Z"}


def test_time_to_verdict_needs_five_plus_five_for_one_percent():
    # Interleaved A B A B ...: complete separation from the first pair on.
    base = [_timed_doc(200 + i, 2 * i * 2) for i in range(6)]
    cand = [_timed_doc(i % 2, 2 * i * 2 + 2) for i in range(6)]
    ttv = compare.time_to_verdict(base, cand, "dumps")
    assert ttv["reached"] and ttv["runs_needed"] == 10
    assert ttv["p_at_verdict"] < 0.01
    # the 10th run (5th candidate, i=4) finished at minute 2*4*2+2+1, 30 s; first start 0
    assert ttv["wall_s"] == (19 * 60 + 30)


def test_time_to_verdict_not_reached_for_identical_distributions():
    base = [_timed_doc(v, 2 * i) for i, v in enumerate([3, 5, 4, 6, 5, 4])]
    cand = [_timed_doc(v, 2 * i + 1) for i, v in enumerate([4, 5, 3, 6, 4, 5])]
    ttv = compare.time_to_verdict(base, cand, "dumps")
    assert not ttv["reached"] and ttv["runs"] == 12 and ttv["p_value"] > 0.5


def test_time_to_verdict_ignores_failed_runs():
    base = [_timed_doc(200, 0, verdict="kernel-crash")]
    ttv = compare.time_to_verdict(base, [_timed_doc(0, 1)], "dumps")
    assert ttv["runs"] == 1 and not ttv["reached"]


def test_stagger_spaces_the_starts(exp, tmp_path):
    import time

    store, runs = _claimed(exp, tmp_path)
    starts = []
    started = time.monotonic()
    matrix.execute(runs, store, _writing_run(starts, lambda run: time.monotonic()), jobs=4,
                   stagger_s=0.05)
    # The pool waits between submissions: n runs take at least (n - 1) staggers.
    assert len(starts) == len(runs)
    assert time.monotonic() - started >= 0.05 * (len(runs) - 1)


def test_report_warns_when_a_variant_mixes_kernel_builds(exp):
    docs = [_doc("unpatched", "cma-stress", 5.0), _doc("unpatched", "cma-stress", 6.0),
            _doc("patched", "cma-stress", 1.0)]
    docs[0]["identity"]["build_key"] = "aaaa"
    docs[1]["identity"]["build_key"] = "bbbb"
    data = compare.build(exp, docs)
    section = next(s for s in data["sections"] if s["scenario"] == "cma-stress")
    assert section["mixed_builds"] == {"unpatched": ["aaaa", "bbbb"]}
    assert "2 different kernel builds" in report.markdown(data)


def test_report_leaves_out_a_scenario_without_runs(exp):
    docs = [_doc("unpatched", "hotplug-offline", v) for v in (2, 2)]
    docs += [_doc("patched", "hotplug-offline", v) for v in (1, 1)]
    data = compare.build(exp, docs)
    assert [s["scenario"] for s in data["sections"]] == ["hotplug-offline"]
    assert "cma-stress" not in report.markdown(data)


def test_report_warns_when_compared_runs_come_from_different_machines(exp):
    docs = [_doc("unpatched", "cma-stress", v) | {"host": {"hostname": "a", "cpu_model": "X"}}
            for v in (400, 380)]
    docs += [_doc("patched", "cma-stress", v) | {"host": {"hostname": "b", "cpu_model": "X"}}
             for v in (30, 28)]
    for d, accel in zip(docs, ("kvm", "kvm", "tcg", "tcg"), strict=True):
        d["identity"] = d["identity"] | {"accel": accel}
    data = compare.build(exp, docs)
    assert data["sections"][0]["mixed_conditions"] == {"host": {"a": 2, "b": 2},
                                                       "accelerator": {"kvm": 2, "tcg": 2}}
    md = report.markdown(data)
    assert "**Warning: the compared runs differ in host: a (2 runs), b (2 runs)." in md
    same = [_doc("unpatched", "cma-stress", 1), _doc("patched", "cma-stress", 1)]
    assert compare.build(exp, same)["sections"][0]["mixed_conditions"] == {}


def test_auto_jobs_follow_what_the_vms_used():
    jobs = matrix.AutoJobs(limit=10, cores=2)
    assert jobs() == 2  # one per core until a run says what a VM costs
    jobs.record({"timings": {"qemu_cpu_s": 30.0, "qemu_wall_s": 200.0}})  # 15 % of a core
    assert jobs() == 10  # 2 * 0.9 / 0.15 = 12, bounded by memory
    for _ in range(3):  # busy VMs (TCG fills): back to one per core, never fewer
        jobs.record({"timings": {"qemu_cpu_s": 95.0, "qemu_wall_s": 100.0}})
    assert jobs() == 2
    jobs.record({"timings": {}})  # a run without the figures changes nothing
    assert jobs() == 2


class _LiveVM:
    """A running VM as AutoJobs.sample() sees it: QEMU's CPU seconds so far."""

    def __init__(self, duty: float) -> None:
        self.duty, self.now = duty, 0.0

    def cpu_seconds(self) -> float:
        return self.duty * self.now


def test_auto_jobs_widen_on_live_vms_before_any_run_ends():
    jobs = matrix.AutoJobs(limit=10, cores=2)
    vms = [_LiveVM(0.15), _LiveVM(0.15)]
    for now in (0.0, 30.0, 60.0):  # not yet watched SETTLE_S: no change
        for vm in vms:
            vm.now = 20.0 + now
        jobs.sample(vms, now=now)
        assert jobs() == 2
    for vm in vms:
        vm.now = 20.0 + jobs.SETTLE_S
    jobs.sample(vms, now=jobs.SETTLE_S)
    assert jobs() == 10  # 15 % of a core each: 2 * 0.9 / 0.15 = 12, bounded by memory
    jobs.sample([], now=200.0)  # they ended: their live figures go, nothing is left
    assert jobs.live == {} and jobs() == 10  # (the last size stays until a figure comes)
    busy = [_LiveVM(0.95), _LiveVM(0.95), _LiveVM(0.95)]
    for t in (300.0, 300.0 + jobs.SETTLE_S):
        for vm in busy:
            vm.now = t
        jobs.sample(busy, now=t)
    assert jobs() == 2  # busy VMs: one per core


def test_execute_widens_to_auto_jobs_as_runs_finish(exp, tmp_path):
    import threading

    store, runs = _claimed(exp, tmp_path)
    running, most = [0], [0]
    lock = threading.Lock()

    def idle_run(run, run_dir):
        import time

        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        doc = _doc(run.variant, run.scenario, 1.0) | {
            "timings": {"qemu_cpu_s": 1.0, "qemu_wall_s": 20.0}}
        (run_dir / "result.json").write_text(json.dumps(doc))
        return doc

    jobs = matrix.AutoJobs(limit=len(runs), cores=1)
    matrix.execute(runs, store, idle_run, jobs=jobs, stagger_s=0.0)
    assert jobs() == len(runs) and most[0] > 1  # started at 1, widened on the duty


def test_until_decided_skips_the_runs_of_a_decided_comparison(exp, tmp_path):


    store = Store(tmp_path / "res")
    store.claim(exp, "quick", force=False)
    runs = matrix.select(matrix.expand(exp, profile="quick", repetitions=10), exp,
                         scenarios=["cma-stress"])
    metric = exp.scenario("cma-stress").metrics[0]
    calls = []

    def separated(run, run_dir):
        calls.append(run.key)
        value = 200 + run.repetition if run.variant == exp.matrix.variants[0] else 0
        doc = _doc(run.variant, run.scenario, 1.0) | {"metrics": {metric: value}}
        (run_dir / "result.json").write_text(json.dumps(doc))
        return doc

    until = sequential.UntilDecided(exp, sequential.plan(0.01, 10))
    matrix.execute(runs, store, separated, jobs=1, until=until)
    kernels = len(exp.matrix.kernels)
    assert len(calls) == 6 * 2 * kernels  # decided at the first look, 6 + 6 runs
    assert all(d["variants"] for d in until.decided.values())


def test_auto_jobs_size_by_the_vms_running_now_not_another_scenarios_finished_runs():
    """The seed matrix of 2026-12-07: 8 hotplug-offline runs had finished (busy VMs, 70 %
    of a core) and 8 cma-stress seed VMs ran at 16 % each; a median over both kept the
    4 runs left waiting for a slot for 40 minutes."""
    jobs = matrix.AutoJobs(limit=18, cores=2)
    for _ in range(8):
        jobs.record({"timings": {"qemu_cpu_s": 70.0, "qemu_wall_s": 100.0}})
    assert jobs() == 2

    def at(t, vms):  # every VM's CPU time at host time t (each started at its own t0)
        for vm in vms:
            vm.now = t - vm.t0
        jobs.sample(vms, now=t)

    vms = [_LiveVM(0.16) for _ in range(8)]
    for vm in vms:
        vm.t0 = -10.0
    at(0.0, vms)
    at(jobs.SETTLE_S, vms)
    # 8 x 0.16 = 1.28 of the 1.8 cores' budget: 0.52 spare, 3 more at 0.16 each
    assert jobs() == 11
    booting = [_LiveVM(0.16), _LiveVM(0.16)]
    for vm in booting:
        vm.t0 = jobs.SETTLE_S
    at(jobs.SETTLE_S + 1, [*vms, *booting])
    assert jobs() <= 10  # 10 running, 2 not yet settled (a core each): no new start
    at(2 * jobs.SETTLE_S + 1, [*vms, *booting])
    assert jobs() == 11  # settled at 16 %: 10 x 0.16 = 1.6, room for one more


def _moved_results(tmp_path, *, with_plan: bool):
    """A results folder made from a config with a patch of its own, then the config and
    the patch deleted and the folder moved (a CI artifact downloaded elsewhere)."""
    import shutil

    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    builtin = Path(__file__).resolve().parents[2] / "vmtest" / "kernels" / "patches"
    shutil.copy(builtin / "6.1" / "revert-d479960e44f2-lru-cache-disable.patch",
                cfg_dir / "my-revert.patch")
    (cfg_dir / "lru.yaml").write_text(REF.read_text().replace(
        "6.1/revert-d479960e44f2-lru-cache-disable.patch", "my-revert.patch"))
    exp = config.load(cfg_dir / "lru.yaml")
    store, runs = _claimed(exp, tmp_path)
    for run in runs:
        d = store.prepare(run)
        doc = _doc(run.variant, run.scenario, 30.0 if run.variant == "patched" else 400.0)
        (d / "result.json").write_text(json.dumps(doc))
    store.reconcile(runs)
    if not with_plan:  # a folder written before matrix.json had the plan
        meta = json.loads((store.root / "matrix.json").read_text())
        del meta["report_plan"]
        (store.root / "matrix.json").write_text(json.dumps(meta))
    store.release()
    shutil.rmtree(cfg_dir)
    moved = tmp_path / "elsewhere" / "results"
    moved.parent.mkdir()
    shutil.move(str(store.root), moved)
    return moved


def test_a_results_folder_copied_elsewhere_re_renders(tmp_path, capsys):
    from vmtest import cli

    moved = _moved_results(tmp_path, with_plan=True)
    for name in report.FILES:
        (moved / name).unlink(missing_ok=True)
    assert cli.main(["report", str(moved)]) in (0, 1)
    html_text = (moved / "report.html").read_text()
    assert "<table>" in html_text and "lru.yaml" in html_text
    assert "fail_to_migrate_dumps" in (moved / "report.md").read_text()


@pytest.mark.fault("vmtest report on a folder from before matrix.json had its report plan, "
                   "copied away from its config's own patches", verdict="(no report)",
                   exit="2", message="vmtest: error: CONFIG: ...: patch 'my-revert.patch' not "
                                     "found fix: looked in ...",
                   kept="the results folder as it was (a folder written now re-renders "
                        "anywhere: test_a_results_folder_copied_elsewhere_re_renders)")
def test_an_old_folder_without_a_plan_fails_naming_what_is_missing(tmp_path, capsys):
    from vmtest import cli

    moved = _moved_results(tmp_path, with_plan=False)
    assert cli.main(["report", str(moved)]) == 2
    assert "my-revert.patch" in capsys.readouterr().err
