#!/usr/bin/env python3
"""Soak: many guests in a row, in one process (the Python API) and through the CLI, and
whether anything grows that should not: open descriptors, threads, child processes,
temporary files, the cache beyond its artifacts, RSS. Prints the figures (issue 16)."""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from vmtest import kernel_choice, paths, run, scenarios
from vmtest.channel import ports
from vmtest.channel.command import ChannelKind
from vmtest.kernel import build as kbuild
from vmtest.qemu import boot


def _children() -> int:
    me = str(os.getpid())
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                count += 1
    return count


def _tmp_entries() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).iterdir()
            if p.name.startswith(("vmtest-", "tmp"))}


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def _cache_mib(skip: tuple[str, ...] = ("runs", "kernels", "work", "ccache", "selftests")) -> float:
    root = paths.cache_root()
    total = 0
    for top in root.iterdir() if root.exists() else ():
        if top.name in skip:
            continue
        for path in [top] if top.is_file() else top.rglob("*"):
            if path.is_file():
                total += path.stat().st_size
    return total / 2**20


def snapshot() -> dict[str, float]:
    return {"fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
            "children": _children(), "tmp": len(_tmp_entries()), "rss_mib": _rss_mib(),
            "cache_mib": _cache_mib()}


def show(label: str, before: dict[str, float], after: dict[str, float], n: int,
         seconds: float) -> None:
    print(f"{label}: {n} in {seconds:.0f} s ({seconds / n:.2f} s each)")
    for key in before:
        print(f"  {key:10s} {before[key]:9.1f} -> {after[key]:9.1f}  "
              f"({after[key] - before[key]:+.1f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="`run -- true` boots per mode")
    parser.add_argument("--scenarios", type=int, default=20, help="scenario runs per mode")
    parser.add_argument("--accel", default="auto")
    args = parser.parse_args()
    built = kbuild.build_kernel(kernel_choice.default_build_spec())
    image = built.artifact.image
    with tempfile.TemporaryDirectory(prefix="vmtest-soak-") as tmp:
        work = Path(tmp)
        # Warm-up: caches (initramfs, accel verdict) and lazy imports are not growth.
        with boot.boot(image, boot.BootOptions(accel=args.accel), work / "warm") as vm:
            vm.ssh().check_output("true")
        before, started = snapshot(), time.monotonic()
        for i in range(args.runs):
            with boot.boot(image, boot.BootOptions(accel=args.accel), work / f"api{i}") as vm:
                vm.ssh().check_output("true")
        show("API: boot + `true`", before, snapshot(), args.runs, time.monotonic() - started)

        # The command on the init's virtio-serial ports (what `vmtest run -- CMD` uses):
        # its socket pairs, selector and stdin thread, in this process.
        before, started = snapshot(), time.monotonic()
        for i in range(args.runs):
            opts = boot.BootOptions(accel=args.accel, command=ports.Command.new("true"))
            with boot.boot(image, opts, work / f"ports{i}") as vm:
                assert vm.commands(ChannelKind.PORTS).run("true", timeout_s=60) == 0
        show("API: boot + `true` on the ports", before, snapshot(), args.runs,
             time.monotonic() - started)

        before, started = snapshot(), time.monotonic()
        for i in range(args.runs):
            subprocess.run([sys.executable, "-m", "vmtest.cli", "run", "--no-share",
                            "--accel", args.accel, "--output", str(work / f"cli{i}"), "--",
                            "true"], check=True, capture_output=True)
        show("CLI: vmtest run -- true", before, snapshot(), args.runs,
             time.monotonic() - started)

        before, started = snapshot(), time.monotonic()
        for i in range(args.scenarios):
            doc = run.run_scenario(built, scenarios.make("hotplug-offline", "quick",
                                                         {"iterations": 1}),
                                   work / f"sc{i}", accel=args.accel)
            assert doc["verdict"] == "ok", doc.get("error")
        show("API: hotplug-offline quick, 1 iteration", before, snapshot(), args.scenarios,
             time.monotonic() - started)

        before, started = snapshot(), time.monotonic()
        for i in range(args.scenarios):
            subprocess.run([sys.executable, "-m", "vmtest.cli", "run", "--scenario",
                            "hotplug-offline", "--variant", "patched", "--set", "iterations=1",
                            "--accel", args.accel, "--output", str(work / f"clisc{i}")],
                           check=True, capture_output=True)
        show("CLI: vmtest run --scenario hotplug-offline", before, snapshot(), args.scenarios,
             time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
