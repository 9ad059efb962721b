#!/usr/bin/env python3
"""Does "run until decided" (vmtest/sequential.py) keep its error rate? A simulation
over recorded run distributions.

The per-run values of a primary metric come from real runs: a results directory of
`vmtest matrix` (--results DIR, its baseline and candidate variant) or a JSON file
{"baseline": [...], "candidate": [...], "source": "..."} (tests/data/runs/). Runs are
drawn from them with replacement:

  H0   both sides drawn from the baseline's runs (no difference): how often does the
       procedure decide? That is its realised error rate; it must stay <= alpha.
  H1   baseline from the baseline's runs, candidate from the candidate's: how often, and
       after how many runs a side, does it decide?

beside the invalid rule it replaces ("stop the first time p < alpha", looking after
every run) on the same draws.

    python3 scripts/sequential_sim.py --runs tests/data/runs/X.json [--alpha 0.01]
        [--max-runs 16] [--trials 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vmtest import sequential  # noqa: E402
from vmtest.compare import mann_whitney_u  # noqa: E402


def load(path: Path, metric: str | None) -> tuple[list[float], list[float], str]:
    if path.is_file():
        doc = json.loads(path.read_text())
        return [float(v) for v in doc["baseline"]], [float(v) for v in doc["candidate"]], \
            str(doc.get("source", path))
    from vmtest.results.store import Store, read_meta

    meta = read_meta(path)
    sides: dict[str, list[float]] = {}
    variants: list[str] = []
    for doc in Store(path).documents():
        ident = doc.get("identity", {})
        name = metric or "fail_to_migrate_dumps"
        value = doc.get("metrics", {}).get(name)
        if doc.get("verdict") == "ok" and isinstance(value, (int, float)):
            sides.setdefault(ident.get("variant"), []).append(float(value))
            if ident.get("variant") not in variants:
                variants.append(ident.get("variant"))
    order = sorted(sides, key=lambda v: v != "unpatched")
    return sides[order[0]], sides[order[1]], f"{path} ({meta.get('config')})"


def sequential_run(base: list[float], cand: list[float], plan: sequential.Plan,
                   rng: random.Random) -> int | None:
    """Runs a side at which the plan decides, None when it does not."""
    b: list[float] = []
    c: list[float] = []
    for n in range(1, plan.looks[-1] + 1):
        b.append(rng.choice(base))
        c.append(rng.choice(cand))
        if n in plan.looks and sequential.decide(b, c, plan, n).decided:
            return n
    return None


def naive_run(base: list[float], cand: list[float], alpha: float, max_runs: int,
              rng: random.Random) -> int | None:
    b: list[float] = []
    c: list[float] = []
    for n in range(1, max_runs + 1):
        b.append(rng.choice(base))
        c.append(rng.choice(cand))
        if n >= 2 and mann_whitney_u(b, c)[1] < alpha:
            return n
    return None


def simulate(base: list[float], cand: list[float], plan: sequential.Plan, trials: int,
             seed: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for label, a, b in (("H0", base, base), ("H1", base, cand)):
        for rule in ("sequential", "naive"):
            rng = random.Random(f"{seed}-{label}")  # the same draws for both rules
            hits = []
            for _ in range(trials):
                n = (sequential_run(a, b, plan, rng) if rule == "sequential"
                     else naive_run(a, b, plan.alpha, plan.looks[-1], rng))
                hits.append(n)
            decided = [n for n in hits if n is not None]
            out[f"{label} {rule}"] = {
                "decided": len(decided) / trials,
                "median_runs": statistics.median(decided) if decided else None}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, required=True,
                    help="a JSON file of recorded runs, or a matrix results directory")
    ap.add_argument("--metric", help="the metric (results directory only)")
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--max-runs", type=int, default=16)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save", type=Path, metavar="FILE",
                    help="also write the runs read as a JSON file (tests/data/runs/)")
    ap.add_argument("--source", help="with --save: where the runs come from (provenance)")
    args = ap.parse_args(argv)
    base, cand, source = load(args.runs, args.metric)
    if args.save:
        args.save.write_text(json.dumps({"source": args.source or source, "baseline": base,
                                         "candidate": cand}, indent=1) + "\n")
    plan = sequential.plan(args.alpha, args.max_runs)
    print(f"runs: {source}\n  baseline ({len(base)}): {base}\n  candidate ({len(cand)}): "
          f"{cand}\nplan: {plan.describe()}; {args.trials} trials each")
    for key, r in simulate(base, cand, plan, args.trials, args.seed).items():
        what = "error rate (decided, no difference)" if key.startswith("H0") \
            else "power (decided)"
        print(f"  {key:<15} {what}: {r['decided']:.2%}"  # type: ignore[index]
              + (f", median {r['median_runs']} runs a side" if r["median_runs"] else ""))  # type: ignore[index]
    return 0


if __name__ == "__main__":
    sys.exit(main())
