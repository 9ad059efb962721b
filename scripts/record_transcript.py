#!/usr/bin/env python3
"""Record what a real guest answers during one real scenario run, for the unit tests
that replay it on the fake machine (vmtest/qemu/fake.py).

    python3 scripts/record_transcript.py --variant unpatched --scenario cma-stress
    python3 scripts/record_transcript.py --config examples/experiments/compaction/compaction.yaml \
        --variant proactive-on --scenario frag
    python3 scripts/record_transcript.py --variant patched --scenario hotplug-offline \
        --set backend=virtio-mem --label virtio-mem

writes tests/data/transcripts/<kernel>-<variant>-<scenario>-<profile>.jsonl.gz (every SSH
command, its status and output, every hotplug QMP call, in order) and, beside it, the
run's result.json as the real run computed it. Re-record after changing what a scenario
sends to the guest: the replay refuses commands the recording did not see.

    python3 scripts/record_transcript.py --command 'LINE' --name NAME [--stdin FILE]

records what `vmtest run -- LINE` gets on the virtio-serial ports (its status, stdout and
stderr; the file as its stdin) from the default kernel, as commands/ports-NAME.jsonl.gz, for the
unit tests of `vmtest run -- CMD` (tests/unit/test_run_command.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from vmtest import config, kernel_choice, paths, run, scenarios
from vmtest.channel.command import ChannelKind
from vmtest.channel.ports import Command
from vmtest.errors import VmtestError
from vmtest.kernel import build as kbuild
from vmtest.qemu import boot as boot_mod
from vmtest.qemu.fake import RecordingMachine

OUT = paths.repo_root() / "tests" / "data" / "transcripts"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(paths.default_config()))
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--variant")
    ap.add_argument("--scenario")
    ap.add_argument("--command", help="record `vmtest run -- COMMAND` on the ports instead")
    ap.add_argument("--name", help="with --command: the transcript's name")
    ap.add_argument("--stdin", type=Path, help="with --command: a file as its stdin")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a scenario parameter (as `vmtest run --set`)")
    ap.add_argument("--label", help="with --set: a word for the transcript's name "
                                    "(<kernel>-<variant>-<scenario>-<label>-<profile>)")
    args = ap.parse_args()
    if args.command:
        return record_command(args.command, args.name or "command", args.stdin, args.accel)
    if not args.variant or not args.scenario:
        ap.error("--variant and --scenario (or --command)")
    exp = config.load(args.config)
    kdef = exp.kernel(args.kernel)
    variant = kdef.variant(args.variant)
    machines: list[RecordingMachine] = []
    # The scenario as the config defines it (a data-defined one is only there).
    defined = {s.name: s for s in exp.scenarios}
    overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    scenario = defined[args.scenario].make(args.profile, **overrides) \
        if args.scenario in defined else scenarios.make(args.scenario, args.profile, overrides)
    # with what the scenario needs of the kernel (hotplug-offline's virtio-mem: its fragment)
    built = kbuild.build_kernel(kbuild.with_config(kdef.build_spec(variant),
                                                   scenario.kernel_needs()))

    @contextlib.contextmanager
    def recording_boot(image: Path, opts: boot_mod.BootOptions, out_dir: Path,
                       **kw: Any) -> Iterator[RecordingMachine]:
        with boot_mod.boot(image, opts, out_dir, machine_class=RecordingMachine, **kw) as vm:
            machines.append(vm)
            yield vm

    label = f"-{args.label}" if args.label else ""
    name = f"{args.kernel}-{args.variant}-{args.scenario}{label}-{args.profile}"
    with tempfile.TemporaryDirectory(prefix="vmtest-record-") as tmp:
        # the variant boots as it says (kernel parameters, machine, sysctls), as in a matrix
        doc = run.run_scenario(built, scenario, Path(tmp), accel=args.accel,
                               boot=recording_boot, variant=variant)
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


def record_command(line: str, name: str, stdin: Path | None, accel: str) -> int:
    """One command on the ports of the default kernel's guest, recorded."""
    image = kernel_choice.KernelChoice().built().artifact.image
    opts = boot_mod.BootOptions(accel=accel, command=Command.new(line, stdin=stdin is not None))
    out, err = io.BytesIO(), io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="vmtest-record-") as tmp, \
            contextlib.ExitStack() as stack:
        fd = None
        if stdin is not None:
            fd = stack.enter_context(stdin.open("rb")).fileno()
        recorded: list[RecordingMachine] = []

        def machine(*a: Any, **kw: Any) -> RecordingMachine:
            recorded.append(RecordingMachine(*a, **kw))
            return recorded[-1]

        try:
            with boot_mod.boot(image, opts, Path(tmp), machine_class=machine) as vm:
                status: object = vm.commands(ChannelKind.PORTS).run(
                    line, stdin=fd, stdout=out, stderr=err, timeout_s=120)
        except VmtestError as exc:  # what the guest did is the recording (a crash too)
            status = f"{type(exc).__name__}: {exc}"
        transcript = recorded[-1].transcript
    OUT.mkdir(parents=True, exist_ok=True)
    transcript.header["how"] = (f"scripts/record_transcript.py --command {line!r}"
                                + (f" --stdin {stdin.name}" if stdin else ""))
    (OUT / "commands").mkdir(parents=True, exist_ok=True)
    transcript.save(OUT / "commands" / f"ports-{name}.jsonl.gz")
    print(f"record: ports-{name}: status {status}, {len(out.getvalue())} bytes out, "
          f"{len(err.getvalue())} bytes err")
    return 0


if __name__ == "__main__":
    sys.exit(main())
