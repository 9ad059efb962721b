#!/usr/bin/env python3
"""Write the experiment for a kernel tree's own change: the tree at BASE is the
`baseline` variant, BASE plus the commits up to HEAD (as a patch series from
`git format-patch`) the `candidate`. Used by the reusable workflow
(.github/workflows/vmtest-kernel.yml); locally:

    python3 scripts/kernel-experiment.py --tree ~/linux --base v6.12 --out /tmp/exp
    vmtest matrix /tmp/exp/experiment.yaml

Exit 2 with one line on a bad ref or an empty range.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from vmtest import config, paths  # noqa: E402
from vmtest.errors import ConfigError  # noqa: E402
from vmtest.kernel import kconfig  # noqa: E402

# Where each scenario's metrics are defined already.
DEFINED_IN = {"cma-stress": "lru-migration.yaml", "hotplug-offline": "lru-migration.yaml",
              "kselftest": "kselftest-mm.yaml"}


def git(tree: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"kernel-experiment: git {' '.join(args)}: "
                         f"{(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    return proc.stdout.strip()


def commit(tree: Path, ref: str) -> str:
    proc = subprocess.run(["git", "-C", str(tree), "rev-parse", "--verify", "--quiet",
                           f"{ref}^{{commit}}"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"kernel-experiment: {ref!r} is not a commit of {tree} "
                         "(fetch it, or check the spelling)")
    return proc.stdout.strip()


def write(tree: Path, base: str, head: str, scenarios: list[str], profile: str,
          repetitions: int, out: Path) -> Path:
    tree = tree.resolve()
    base_sha, head_sha = commit(tree, base), commit(tree, head)
    out.mkdir(parents=True, exist_ok=True)
    patch_dir = out / "patches"
    patch_dir.mkdir(exist_ok=True)
    for old in patch_dir.glob("*.patch"):
        old.unlink()
    listed = git(tree, "format-patch", "--no-stat", "--no-signature", "-o", str(patch_dir),
                 f"{base_sha}..{head_sha}")
    patches = [Path(line).name for line in listed.splitlines() if line.strip()]
    if not patches:
        raise SystemExit(f"kernel-experiment: no commits between {base} and {head}: nothing "
                         "to compare")
    defs = {}
    for name in scenarios:
        if name not in DEFINED_IN:
            raise SystemExit(f"kernel-experiment: unknown scenario {name!r} (known: "
                             f"{', '.join(DEFINED_IN)})")
        exp = config.load(paths.configs_dir() / DEFINED_IN[name])
        sc = exp.scenario(name)
        defs[name] = {"metrics": list(sc.metrics), **({"params": dict(sc.params)}
                                                      if sc.params else {})}
    experiment = {
        "description": f"{tree.name}: {base} ({base_sha[:12]}) vs + {len(patches)} commits "
                       f"to {head} ({head_sha[:12]})",
        "kernels": {"tree": {
            "source": {"git": str(tree), "ref": base_sha},
            "fragments": list(kconfig.DEFAULT_FRAGMENTS),
            "variants": {"baseline": {"description": f"{base} as is"},
                         "candidate": {"description": f"{base} + {len(patches)} commits",
                                       "patches": [f"patches/{p}" for p in patches]}}}},
        "scenarios": defs,
        "matrix": {"kernels": ["tree"], "variants": ["baseline", "candidate"],
                   "scenarios": scenarios, "repetitions": repetitions, "profile": profile},
    }
    path = out / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    config.load(path)  # what vmtest matrix will read must load
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", type=Path, required=True)
    p.add_argument("--base", required=True)
    p.add_argument("--head", default="HEAD")
    p.add_argument("--scenarios", default="kselftest")
    p.add_argument("--profile", default="quick")
    p.add_argument("--repetitions", type=int, default=3)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        path = write(args.tree, args.base, args.head, args.scenarios.split(), args.profile,
                     args.repetitions, args.out)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"kernel-experiment: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
