#!/usr/bin/env python3
"""How much of what a kernel developer lists does `vmtest dmesg` find in public logs?

For every X.log of a corpus folder (default tests/data/dmesg-corpus) with a hand-written
X.expected.yaml (its format: the folder's README.md), parse the log and match the
annotated items against the parser's event records (`vmtest dmesg --json` "events"):

  found   an item the parser reports at all (a splat of the right kind at its line or
          with its title; a dump of that page; a failure line with its numbers)
  record  found as one record with every identifying field right (a splat's kind, title
          and culprit frame; a dump's page/pfn, refcount, mapcount, reason and kind; a
          failure line's range/area, size and errno; a loss marker's count)
  extra   a record of the parser that no annotated item matches (precision)

and check --fail-on-splat, excerpt and the prefix forms per file. Prints one line per
file and the totals; with --min-recall/--min-precision, exits 1 below them (the unit
test runs it so).

    python3 scripts/dmesg_corpus.py [DIR] [--verbose] [--min-recall R] [--min-precision P]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vmtest.collect import dmesg  # noqa: E402

# Lead-ins a title may be written with or without.
_LEAD = re.compile(r"^(?:(?:NMI )?watchdog: |rcu: |Kernel panic - not syncing: ?|WARNING: "
                   r"(?:CPU: \d+ PID: \d+ at )?|BUG: |INFO: )+")


def _title(text: str | None) -> str:
    return re.sub(r"\s+", " ", _LEAD.sub("", (text or "").strip())).lower()


def _same_title(expected: str | None, got: str | None) -> bool:
    a, b = _title(expected), _title(got)
    return bool(a) and bool(b) and (a in b or b in a or a[:40] == b[:40])


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 0) if str(value).startswith(("0x", "-", "+")) or \
            str(value).isdigit() else int(str(value), 16)
    except ValueError:
        return None


def _hexs(value: Any) -> str | None:
    """A page address or mapping, lowercase, without 0x and leading zeros."""
    if value is None:
        return None
    text = str(value).lower().removeprefix("0x").lstrip("0")
    return text or "0"


def _found(item: dict[str, Any], rec: dict[str, Any]) -> bool:
    kind = item["type"]
    if rec.get("type") != kind:
        return False
    if kind == "splat":
        if rec["kind"] != item.get("kind"):
            return False
        line = item.get("line")
        return (line is not None and rec.get("line") is not None
                and abs(rec["line"] - line) <= 2) or _same_title(item.get("title"), rec["title"])
    if kind == "dump":
        page, pfn = _hexs(item.get("page")), _int(item.get("pfn"))
        if pfn is not None and _int(rec.get("pfn")) == pfn:
            return True
        if page is not None and _hexs(rec.get("page")) == page:
            return True
        return (pfn is None and page is None and rec.get("refcount") == item.get("refcount")
                and rec.get("mapcount") == item.get("mapcount"))
    if kind == "cma-failure":
        return rec.get("pages") == item.get("pages") and rec.get("errno") == item.get("errno")
    if kind in ("contig-busy", "offline-failure"):
        return (_int(rec.get("start")) == _int(item.get("start"))
                and _int(rec.get("end")) == _int(item.get("end")))
    if kind == "cma-available":
        return rec.get("free") == item.get("free") and rec.get("total") == item.get("total")
    if kind in ("migrate-failure", "isolate-failure"):
        return _int(rec.get("pfn")) == _int(item.get("pfn"))
    if kind == "loss":
        return rec.get("what") == item.get("what") and rec.get("count") == item.get("count")
    return False


def _exact(item: dict[str, Any], rec: dict[str, Any]) -> bool:
    kind = item["type"]
    if kind == "splat":
        culprit = item.get("culprit")
        return _same_title(item.get("title"), rec["title"]) and \
            (culprit is None or rec.get("culprit") == culprit)
    if kind == "dump":
        return (rec.get("refcount") == item.get("refcount")
                and rec.get("mapcount") == item.get("mapcount")
                and (rec.get("reason") or None) == (item.get("reason") or None)
                and (item.get("kind") is None or rec.get("kind") == item.get("kind")))
    if kind == "cma-failure":
        return (rec.get("area") or None) == (item.get("area") or None)
    if kind == "offline-failure":
        return (rec.get("reason") or None) == (item.get("reason") or None)
    if kind == "migrate-failure":
        return rec.get("errno") == item.get("errno")
    return True


def score_file(log: Path, expected: dict[str, Any]) -> dict[str, Any]:
    report = dmesg.parse(log.read_text(errors="replace"))
    records = report.events()
    items = expected.get("items") or []
    used: set[int] = set()
    found = exact = 0
    missed: list[str] = []
    for item in items:
        # an exact record first, else any record that finds it
        hits = [i for i, r in enumerate(records) if i not in used and _found(item, r)]
        best = next((i for i in hits if _exact(item, records[i])), hits[0] if hits else None)
        if best is None:
            missed.append(f"missed {item['type']} {item.get('kind', '')} "
                          f"{item.get('title') or item.get('reason') or ''} (line "
                          f"{item.get('line')})")
            continue
        used.add(best)
        found += 1
        if _exact(item, records[best]):
            exact += 1
        else:
            r = records[best]
            missed.append(f"inexact {item['type']}: expected {_brief(item)}; got {_brief(r)}")
    extra = [r for i, r in enumerate(records) if i not in used]
    want_fail = bool(expected.get("fail_on_splat"))
    prefixes = {p for p in expected.get("prefixes") or [] if p not in ("none", "indent")}
    got_prefixes = {p for p in report.prefixes if p != "indent"}
    return {"file": log.name, "items": len(items), "found": found, "exact": exact,
            "records": len(records), "extra": len(extra),
            "fail_on_splat_ok": report.crashed() == want_fail,
            "excerpt_ok": (not report.starts_at_boot) == bool(expected.get("excerpt", True)),
            "prefixes_ok": prefixes <= got_prefixes,
            "notes": missed + [f"extra {_brief(r)}" for r in extra]
            + ([f"fail-on-splat: expected {want_fail}"] if report.crashed() != want_fail else [])
            + ([f"prefixes: expected {sorted(prefixes)}, got {sorted(got_prefixes)}"]
               if not prefixes <= got_prefixes else [])}


def _brief(rec: dict[str, Any]) -> str:
    keys = ("kind", "title", "culprit", "page", "pfn", "refcount", "mapcount", "reason",
            "area", "pages", "errno", "start", "end", "what", "count")
    return rec.get("type", "?") + " " + " ".join(f"{k}={str(rec[k])[:60]}" for k in keys
                                                 if rec.get(k) is not None)


def score(folder: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = []
    for log in sorted(folder.glob("*.log")):
        annotation = log.with_suffix(".expected.yaml")
        if annotation.exists():
            rows.append(score_file(log, yaml.safe_load(annotation.read_text()) or {}))
    items = sum(r["items"] for r in rows)
    records = sum(r["records"] for r in rows)
    totals = {
        "files": len(rows), "items": items,
        "recall_found": sum(r["found"] for r in rows) / items if items else 1.0,
        "recall_record": sum(r["exact"] for r in rows) / items if items else 1.0,
        "precision": 1 - sum(r["extra"] for r in rows) / records if records else 1.0,
        "fail_on_splat_wrong": sum(not r["fail_on_splat_ok"] for r in rows),
        "excerpt_wrong": sum(not r["excerpt_ok"] for r in rows),
        "prefixes_wrong": sum(not r["prefixes_ok"] for r in rows),
    }
    return rows, totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", type=Path, default=ROOT / "tests/data/dmesg-corpus")
    ap.add_argument("--verbose", "-v", action="store_true", help="what each file missed")
    ap.add_argument("--min-recall", type=float, help="exit 1 below this record recall")
    ap.add_argument("--min-precision", type=float, help="exit 1 below this precision")
    args = ap.parse_args(argv)
    rows, t = score(args.folder)
    for r in rows:
        flags = "".join(("" if r["fail_on_splat_ok"] else " FAIL-ON-SPLAT",
                         "" if r["excerpt_ok"] else " EXCERPT",
                         "" if r["prefixes_ok"] else " PREFIXES"))
        print(f"{r['file'][:58]:<58} items {r['items']:>3} found {r['found']:>3} "
              f"record {r['exact']:>3} extra {r['extra']:>3}{flags}")
        if args.verbose:
            for note in r["notes"]:
                print(f"    {note}")
    print(f"{t['files']} files, {t['items']} items: recall {t['recall_found']:.1%} found, "
          f"{t['recall_record']:.1%} as one record with its fields; precision "
          f"{t['precision']:.1%}; --fail-on-splat wrong on {t['fail_on_splat_wrong']}, "
          f"excerpt wrong on {t['excerpt_wrong']}, prefix forms missed on "
          f"{t['prefixes_wrong']}")
    low = (args.min_recall is not None and t["recall_record"] < args.min_recall) or \
        (args.min_precision is not None and t["precision"] < args.min_precision)
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
