#!/usr/bin/env python3
"""Record what a real guest answers during one real scenario run, for the unit tests
that replay it on the fake machine (vmtest/qemu/fake.py).

    python3 scripts/record_transcript.py --variant unpatched --scenario cma-stress

writes tests/data/transcripts/<kernel>-<variant>-<scenario>-<profile>.jsonl.gz (every SSH
command, its status and output, every hotplug QMP call, in order) and, beside it, the
run's result.json as the real run computed it. Re-record after changing what a scenario
sends to the guest: the replay refuses commands the recording did not see.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmtest import config, paths, run, scenarios
from vmtest.kernel import build as kbuild
from vmtest.qemu import boot as boot_mod
from vmtest.qemu.fake import RecordingMachine

OUT = paths.repo_root() / "tests" / "data" / "transcripts"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(paths.default_config()))
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--variant", required=True)
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--accel", default="tcg")
    args = ap.parse_args()
    kdef = config.load(args.config).kernel(args.kernel)
    built = kbuild.build_kernel(kdef.build_spec(kdef.variant(args.variant)))
    machines: list[RecordingMachine] = []

    @contextlib.contextmanager
    def recording_boot(*a: Any, **kw: Any) -> Iterator[RecordingMachine]:
        with boot_mod.boot(*a, machine_class=RecordingMachine, **kw) as vm:
            machines.append(vm)
            yield vm

    name = f"{args.kernel}-{args.variant}-{args.scenario}-{args.profile}"
    with tempfile.TemporaryDirectory(prefix="vmtest-record-") as tmp:
        doc = run.run_scenario(built, scenarios.make(args.scenario, args.profile),
                               Path(tmp), accel=args.accel, boot=recording_boot)
    if doc["verdict"] != "ok":
        print(f"record: the run's verdict is {doc['verdict']}: {doc.get('error')}",
              file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    machines[0].transcript.save(OUT / f"{name}.jsonl.gz")
    (OUT / f"{name}.result.json").write_text(json.dumps(doc, indent=1) + "\n")
    steps = len(machines[0].transcript.steps)
    print(f"record: {name}: {steps} steps -> {OUT / (name + '.jsonl.gz')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
