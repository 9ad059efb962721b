"""`vmtest dmesg` on kernel logs people published (tests/data/dmesg-corpus): the hand
annotations' items found, as records with their fields, nothing invented, the crash check
right on every file; and each log's report as recorded (golden/)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from vmtest.collect import dmesg

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "dmesg-corpus"
LOGS = sorted(CORPUS.glob("*.log"))


def _scorer():
    spec = importlib.util.spec_from_file_location("dmesg_corpus",
                                                  ROOT / "scripts" / "dmesg_corpus.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_log_has_its_annotation_and_its_source():
    sources = (CORPUS / "SOURCES.md").read_text()
    assert len(LOGS) >= 40
    for log in LOGS:
        assert log.with_suffix(".expected.yaml").exists(), log.name
        assert f"### {log.name}" in sources, log.name


def test_bars_on_the_public_corpus():
    rows, totals = _scorer().score(CORPUS)
    assert totals["files"] == len(LOGS)
    wrong = [r["file"] for r in rows if not r["fail_on_splat_ok"]]
    assert wrong == []
    assert totals["recall_record"] >= 0.90, totals
    assert totals["precision"] >= 0.95, totals
    assert totals["excerpt_wrong"] == 0


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.stem)
def test_report_is_the_recorded_one(log, update_golden):
    doc = dmesg.parse(log.read_text(errors="replace")).summary_dict()
    text = json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n"
    golden = CORPUS / "golden" / f"{log.stem}.json"
    if update_golden:
        golden.write_text(text)
    assert golden.exists(), f"no {golden.name}: VMTEST_UPDATE_GOLDEN=1 writes it"
    assert json.loads(golden.read_text()) == json.loads(text)
