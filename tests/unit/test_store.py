"""results/store.py and `vmtest merge`: shards combined, overlaps and foreign shards
refused before anything is copied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmtest import cli, config, matrix
from vmtest.errors import InfraError
from vmtest.results import document, store

REF = Path(__file__).resolve().parents[2] / "configs" / "lru-migration.yaml"


def _doc(run: store.Run, value: float) -> dict:
    doc = document.new(base=run.kernel, variant=run.variant, patches=[], scenario=run.scenario,
                       profile=run.profile, parameters={"seed": run.repetition + 1},
                       accel="tcg", kernel_release="6.1.192", build_key="k" * 24)
    doc["metrics"] = {"fail_to_migrate_dumps": value, "drains_per_offline": value}
    return doc


def _shard(root: Path, exp, spec: str, profile: str = "quick") -> list[store.Run]:
    """A results directory holding one shard of the quick matrix, every run ok."""
    s = store.Store(root)
    every = matrix.expand(exp, profile=profile, repetitions=2)
    s.claim(exp, profile, force=False, expected=every)
    runs = matrix.shard(every, spec)
    for run in runs:
        out = s.prepare(run)
        doc = _doc(run, 1.0)
        document.write(doc, out / "result.json")
        s.record(run, doc)
    return runs


def test_merge_combines_shards_and_renders(tmp_path):
    exp = config.load(REF)
    a = _shard(tmp_path / "a", exp, "1/2")
    b = _shard(tmp_path / "b", exp, "2/2")
    out = tmp_path / "merged"
    assert cli.main(["merge", str(out), str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    merged = store.Store(out)
    assert merged.indexed() == {r.key for r in a + b}
    assert len(merged.documents()) == len(a) + len(b) == 8
    assert store.read_meta(out)["fingerprint"] == store.config_fingerprint(exp, "quick")
    # The merged directory renders like any other (2+2 runs: too few to decide).
    assert cli.main(["report", str(out)]) == 0
    assert "| undecided |" in (out / "report.md").read_text()


def test_merge_refuses_overlap_before_copying(tmp_path):
    exp = config.load(REF)
    _shard(tmp_path / "a", exp, "1/2")
    _shard(tmp_path / "b", exp, "1/2")
    out = tmp_path / "merged"
    with pytest.raises(InfraError, match="more than one input"):
        store.merge(out, [tmp_path / "a", tmp_path / "b"])
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())


@pytest.mark.fault("merging shards with one missing", verdict="(no report)", exit="3",
                   message="vmtest: error: N of M runs are in none of the inputs: ... fix: "
                           "... --resume", kept="the shards")
def test_merge_of_an_incomplete_set_exits_3_naming_the_runs(tmp_path):
    exp = config.load(REF)
    _shard(tmp_path / "a", exp, "1/2")  # shard 2/2 died before writing anything
    assert cli.main(["merge", str(tmp_path / "m"), str(tmp_path / "a")]) == 3
    with pytest.raises(InfraError, match=r"4 of 8 runs are in none of the inputs: 6\.1__") \
            as err:
        store.merge(tmp_path / "m2", [tmp_path / "a"])
    assert "--resume" in (err.value.hint or "")
    assert store.merge(tmp_path / "m3", [tmp_path / "a"], force=True) == 4


def test_merged_shards_report_equals_one_directory(tmp_path):
    """The report of merged shards is the report of the same run documents written
    into one directory."""
    import shutil

    exp = config.load(REF)
    _shard(tmp_path / "a", exp, "1/2")
    _shard(tmp_path / "b", exp, "2/2")
    whole = store.Store(tmp_path / "whole")  # the same documents, one directory
    whole.claim(exp, "quick", force=False)
    for shard_dir in ("a", "b"):
        for run_dir in (tmp_path / shard_dir / "runs").iterdir():
            shutil.copytree(run_dir, tmp_path / "whole" / "runs" / run_dir.name)
    assert len(whole.documents()) == 8
    assert cli.main(["merge", str(tmp_path / "m"), str(tmp_path / "a"), str(tmp_path / "b")]) \
        == 0
    for d in ("m", "whole"):
        assert cli.main(["report", str(tmp_path / d)]) == 0

    def report(d: str) -> dict:
        data = json.loads((tmp_path / d / "report.json").read_text())
        data.pop("config")
        return data

    assert report("m") == report("whole")


def test_merge_refuses_other_configs_unless_forced(tmp_path):
    exp = config.load(REF)
    _shard(tmp_path / "a", exp, "1/2", profile="quick")
    _shard(tmp_path / "b", exp, "2/2", profile="seed")
    assert cli.main(["merge", str(tmp_path / "m"), str(tmp_path / "a"), str(tmp_path / "b")]) \
        == 2
    assert store.merge(tmp_path / "m2", [tmp_path / "a", tmp_path / "b"], force=True) == 8


def test_merge_of_a_directory_that_is_no_results(tmp_path):
    (tmp_path / "x").mkdir()
    assert cli.main(["merge", str(tmp_path / "m"), str(tmp_path / "x")]) == 2


@pytest.mark.fault("truncated result.json in a results directory", verdict="(not a result)",
                   exit="0 (report) / the run again (--resume)",
                   message="(the run is not counted)", kept="every other run")
def test_torn_result_is_not_done_and_is_skipped(tmp_path):
    exp = config.load(REF)
    runs = _shard(tmp_path / "a", exp, "1/1")
    s = store.Store(tmp_path / "a")
    (s.run_dir(runs[0]) / "result.json").write_text('{"verdict": "ok", "metr')
    assert not s.done(runs[0])
    assert len(s.documents()) == len(runs) - 1


def test_document_write_is_atomic_and_records_shape_problems(tmp_path):
    doc = {"verdict": "ok"}
    document.write(doc, tmp_path / "result.json")
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert "missing run_id" in on_disk["schema_problems"] and "finished_at" in on_disk
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left
