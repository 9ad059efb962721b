#!/usr/bin/env python3
"""A git kernel history with a known answer, for `vmtest bisect` (its tests and bench).

From Debian's linux-source-6.1 (or 6.12) it makes a repository in OUT:

  base     the tarball as Debian ships it (its top-level .gitignore, which ignores
           everything but debian/, is left out: it would hide the kernel from git)
  1        vmtest's instrumentation (kernels/patches/SERIES/vmtest-instrumentation.patch)
  2..N     noise: one-line comments in mm/ and drivers/ files that change nothing measured,
           and, at a position the seed chooses, the planted change:
             --direction regression: the revert of d479960e44f2 (the metric goes up:
               the first bad commit)
             --direction fix: the history starts reverted (commit 1) and the planted
               commit applies d479960e44f2 again (the commit that fixed it)
           with --break-build, two commits before it a planted build failure and its
           fix right after (bisect must skip it)

Tags: `old` (commit 1: vmtest bisect's --good) and `new` (HEAD: its --bad; with
--direction fix, --term-old broken --term-new fixed). The answer is written to
OUT/.git/vmtest-history.json ({"planted": SHA, "subject": ..., "position": K, ...}).

    python3 scripts/make-history.py OUT [--series 6.1] [--commits 16] [--seed 1]
        [--direction regression|fix] [--break-build] [--position K]

The same arguments make the same commits (fixed dates and author): the SHAs depend only
on them and on the linux-source package's version. With --reuse, an OUT that holds the
history of the same arguments and package (clean, at its tip; a bisection left under way
is reset) is kept and its answer printed; another history made by this script is
replaced; anything else is refused.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from vmtest import untar

ROOT = Path(__file__).resolve().parents[1]
PATCHES = ROOT / "vmtest" / "kernels" / "patches"
REVERT = "revert-d479960e44f2-lru-cache-disable.patch"
# Files compiled into every vmtest kernel: noise lands in them (a comment changes no
# object code but does change the tree, as real unrelated commits do).
NOISE_FILES = ["mm/vmstat.c", "mm/page_alloc.c", "mm/swap.c", "mm/migrate.c",
               "mm/compaction.c", "mm/memory_hotplug.c", "drivers/base/core.c",
               "drivers/char/mem.c", "drivers/tty/serial/8250/8250_core.c",
               "drivers/block/loop.c"]
BREAK_FILE = "mm/vmstat.c"


def git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    proc = subprocess.run(["git", "-C", str(repo), "-c", "user.name=vmtest history",
                           "-c", "user.email=vmtest@localhost", *args], input=stdin,
                          capture_output=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"make-history: git {' '.join(args[:3])} failed: "
                 f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


def commit(repo: Path, subject: str, date: int) -> str:
    git(repo, "add", "-A")
    env_date = f"{date} +0000"
    proc = subprocess.run(["git", "-C", str(repo), "-c", "user.name=vmtest history",
                           "-c", "user.email=vmtest@localhost", "commit", "-q", "-m", subject],
                          env={"GIT_AUTHOR_DATE": env_date, "GIT_COMMITTER_DATE": env_date,
                               "PATH": "/usr/bin:/bin"}, capture_output=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"make-history: commit {subject!r} failed: {proc.stderr.decode().strip()}")
    return git(repo, "rev-parse", "HEAD").strip()


def apply(repo: Path, patch: Path, reverse: bool = False) -> None:
    args = ["patch", "-p1", "--fuzz=0", "--no-backup-if-mismatch", "-i", str(patch)]
    if reverse:
        args.insert(1, "-R")
    proc = subprocess.run(args, cwd=repo, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"make-history: {patch.name} does not apply: {proc.stdout.strip()}")


def extract(series: str, out: Path) -> None:
    tarball = Path(f"/usr/src/linux-source-{series}.tar.xz")
    if not tarball.exists():
        sys.exit(f"make-history: {tarball} is missing; apt-get install linux-source-{series}")
    with tarfile.open(tarball) as tar:
        top = tar.next()
        prefix = top.name.split("/")[0] + "/" if top else ""
        members = []
        for m in tar.getmembers():
            if m.name.startswith(prefix) and m.name != prefix.rstrip("/"):
                m.name = m.name[len(prefix):]
                members.append(m)
        untar.extract_all(tar, out, members=members)


def package_version(series: str) -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", f"linux-source-{series}"],
                          capture_output=True, text=True, check=False).stdout.strip()


def reusable(out: Path, wanted: dict[str, object]) -> dict[str, object] | None:
    """OUT's answer if it is the history of `wanted`, clean and at its tip."""
    try:
        answer: dict[str, object] = json.loads((out / ".git" / "vmtest-history.json")
                                               .read_text())
    except (OSError, ValueError):
        return None
    if answer.get("arguments") != wanted:
        return None
    # a bisection cut short (a crashed test, a killed bench) leaves it mid-bisect
    subprocess.run(["git", "-C", str(out), "bisect", "reset"], capture_output=True,
                   check=False)
    status = subprocess.run(["git", "-C", str(out), "status", "--porcelain"],
                            capture_output=True, text=True, check=False)
    head = subprocess.run(["git", "-C", str(out), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()
    if status.returncode != 0 or status.stdout or head != answer.get("new"):
        return None
    return answer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--series", default="6.1", choices=("6.1", "6.12"))
    ap.add_argument("--commits", type=int, default=16, help="commits after the base")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--direction", choices=("regression", "fix"), default="regression")
    ap.add_argument("--break-build", action="store_true")
    ap.add_argument("--position", type=int, default=None,
                    help="the planted commit's number (default: chosen by the seed)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep OUT if it holds this very history (see above)")
    args = ap.parse_args(argv)
    if args.commits < 6:
        sys.exit("make-history: --commits must be at least 6")
    lowest = 4 if args.break_build else 3  # room for the build failure and its fix
    if args.position is not None and not lowest <= args.position <= args.commits:
        sys.exit(f"make-history: --position must be in {lowest}..{args.commits}")
    out = args.out.resolve()
    wanted = {k: v for k, v in vars(args).items() if k not in ("out", "reuse")}
    wanted["package"] = package_version(args.series)
    if args.reuse and out.exists():
        found = reusable(out, wanted)
        if found is not None:
            print(json.dumps(found))
            return 0
        if (out / ".git" / "vmtest-history.json").exists():  # one of ours, another history
            shutil.rmtree(out)
    if out.exists():
        sys.exit(f"make-history: {out} exists; give a new folder (or --reuse)")
    rng = random.Random(args.seed)
    out.mkdir(parents=True)
    extract(args.series, out)
    (out / ".gitignore").unlink(missing_ok=True)  # Debian's: everything but debian/
    git(out, "init", "-q", "-b", "main")
    date = 1_700_000_000
    base = commit(out, f"linux-source-{args.series} as Debian ships it", date)
    instrumentation = PATCHES / args.series / "vmtest-instrumentation.patch"
    revert = PATCHES / args.series / REVERT
    apply(out, instrumentation)
    if args.direction == "fix":
        apply(out, revert)  # the old state is the broken one
        old = commit(out, "mm: vmtest instrumentation; d479960e44f2 reverted", date + 60)
    else:
        old = commit(out, "mm: vmtest instrumentation", date + 60)
    # positions 2..commits: the planted change somewhere in the middle third or so
    position = args.position or rng.randint(lowest, args.commits - 2)
    broken_at = position - 2 if args.break_build else None
    planted = None
    for k in range(2, args.commits + 1):
        date += 3600
        if k == position:
            if args.direction == "regression":
                apply(out, revert)
                subject = 'Revert "mm: disable LRU pagevec during the migration temporarily"'
            else:
                apply(out, revert, reverse=True)
                subject = "mm: disable LRU pagevec during the migration temporarily"
            planted = commit(out, subject, date)
            continue
        if broken_at is not None and k == broken_at:
            path = out / BREAK_FILE
            path.write_text(path.read_text() + "\n#error vmtest planted build failure\n")
            commit(out, "mm/vmstat: planted build failure", date)
            continue
        if broken_at is not None and k == broken_at + 1:
            path = out / BREAK_FILE
            path.write_text(path.read_text().replace(
                "\n#error vmtest planted build failure\n", ""))
            commit(out, "mm/vmstat: fix the planted build failure", date)
            continue
        name = rng.choice(NOISE_FILES)
        path = out / name
        path.write_text(path.read_text() + f"/* vmtest history noise {k} */\n")
        area = name.split("/")[0]
        commit(out, f"{area}: noise {k} ({name}, a comment)", date)
    assert planted is not None
    git(out, "tag", "old", old)
    git(out, "tag", "new", "HEAD")
    answer = {"series": args.series, "seed": args.seed, "direction": args.direction,
              "commits": args.commits, "base": base, "old": old,
              "new": git(out, "rev-parse", "HEAD").strip(), "planted": planted,
              "position": position, "subject": git(out, "log", "-1", "--format=%s",
                                                   planted).strip(),
              "build_failure_at": broken_at, "arguments": wanted}
    (out / ".git" / "vmtest-history.json").write_text(json.dumps(answer, indent=1) + "\n")
    print(json.dumps(answer))
    shutil.rmtree(out / ".git" / "hooks", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
