"""`vmtest doctor`: check the host and print the fix for what is missing."""

from __future__ import annotations

import argparse
import dataclasses
import json

from vmtest import doctor
from vmtest.cli.common import Sub
from vmtest.errors import EXIT_INFRA, EXIT_OK
from vmtest.qemu.accel import VerdictStore


def add_parser(sub: Sub) -> None:
    p = sub.add_parser("doctor", help="check the host: tools, kernel source, KVM usability")
    p.add_argument("--reprobe", action="store_true", help="forget the remembered KVM verdict")
    p.add_argument("--json", action="store_true",
                   help="print the checks as JSON (name, ok, detail, fix, optional) and "
                        "whether the host is ready")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.reprobe:
        VerdictStore().forget()
    checks = doctor.run_checks()
    bad = [c for c in checks if not c.ok and not c.optional]
    if args.json:
        print(json.dumps({"ready": not bad, "checks": [dataclasses.asdict(c) for c in checks]},
                         indent=2))
        return EXIT_INFRA if bad else EXIT_OK
    width = max(len(c.name) for c in checks)
    for check in checks:
        mark = "ok " if check.ok else ("-- " if check.optional else "NO ")
        print(f"{mark} {check.name:<{width}}  {check.detail}")
        if not check.ok and check.fix:
            print(f"    {'':<{width}}  fix: {check.fix}")
    return EXIT_INFRA if bad else EXIT_OK
