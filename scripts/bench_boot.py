#!/usr/bin/env python3
"""Boot benchmark, measured beside its floor in the same run, interleaved:

- floor: the same kernel under the same QEMU command line (vmtest's argv, with the
  devices of the runs it stands beside: no NIC, the command's virtio-serial ports),
  started with a busybox initramfs whose init powers off at once -- what booting costs
  before vmtest does anything; and, for reference, the floor with the devices of a guest
  vmtest talks SSH to (a NIC, no ports);
- `vmtest run --no-share -- true` and `vmtest run -- true` (the current folder shared over
  virtio-9p, the default), as a user types them (the default kernel found as `vmtest run`
  finds it; --kernel names one instead): process start to exit.

The four kinds take turns in a rotating order, after one unmeasured run of each vmtest
kind (the caches a user's first run fills).

Prints min/median/max of each and the medians' ratios to the first floor (issue 12's
bars: <= 1.3x without a share, <= 1.4x with one). --arch arm64: the same for an arm64
guest (issue 27's bar: <= 1.3x), its floor the same Image with the same firmware choice
(none: QEMU's -kernel loader and a device tree) and the arm64 busybox."""

from __future__ import annotations

import argparse
import compileall
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import vmtest
from vmtest import arch as archs
from vmtest import kernel_choice
from vmtest.channel.ports import PORT_NAMES
from vmtest.guest import rootfs
from vmtest.kernel import build as kbuild
from vmtest.qemu import boot
from vmtest.qemu.argv import MachineSpec, build_argv

FLOOR_INIT = b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n"


def floor_initramfs(out: Path, arch: str = archs.DEFAULT) -> Path:
    busybox = rootfs.guest_programs(["busybox"], arch)[0][1]
    rootfs.write_cpio([rootfs.directory("/bin"), rootfs.file_from("/bin/busybox", busybox, 0o755),
                       rootfs.file_data("/init", FLOOR_INIT, 0o755)], out)
    return out


def floor_run(kernel: Path, initrd: Path, accel: str, log: Path, *, network: bool = True,
              ports: tuple[str, ...] = (), arch: str = archs.DEFAULT) -> float:
    """QEMU with vmtest's argv until the guest's init powers it off. `network` and
    `ports`: the devices of the run it stands beside (`vmtest run -- CMD` starts its
    guest without a NIC and with its command's virtio-serial ports)."""
    spec = MachineSpec(kernel=kernel, initrd=initrd, accel=accel,
                       firmware=boot.firmware_for(arch, False), network=network, ports=ports,
                       arch=arch, binary=archs.get(arch).qemu)
    qmp, qmp_remote = socket.socketpair()
    con, con_remote = socket.socketpair()
    port_pairs = {name: socket.socketpair() for name in ports}
    argv = build_argv(spec, qmp_fd=qmp_remote.fileno(), console_fd=con_remote.fileno(),
                      console_log=log,
                      port_fds={name: pair[1].fileno() for name, pair in port_pairs.items()})
    started = time.monotonic()
    proc = subprocess.Popen(argv, pass_fds=(qmp_remote.fileno(), con_remote.fileno(),
                                            *(pair[1].fileno() for pair in port_pairs.values())),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    qmp_remote.close()
    con_remote.close()
    for _, remote in port_pairs.values():
        remote.close()
    con.setblocking(False)
    try:
        while proc.poll() is None:  # drain the console (a full socket would stall it)
            try:
                con.recv(65536)
            except BlockingIOError:
                time.sleep(0.005)
        return time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        qmp.close()
        con.close()
        for local, _ in port_pairs.values():
            local.close()


def vmtest_run(kernel_dir: str | None, accel: str, out: str, share: bool,
               arch: str = archs.DEFAULT) -> float:
    """The bar's command as a user types it: `vmtest run -- true` finds the default
    kernel itself (unless the benchmark was given --kernel)."""
    argv = [sys.executable, "-m", "vmtest.cli", "run",
            *(["--kernel", kernel_dir] if kernel_dir else []), "--accel", accel,
            *(["--arch", arch] if arch != archs.DEFAULT else []),
            "--output", out, *([] if share else ["--no-share"]), "--", "true"]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"vmtest run failed ({proc.returncode}):\n{proc.stderr}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=10)
    parser.add_argument("--accel", default="tcg", help="tcg (default) or kvm")
    parser.add_argument("--kernel", help="build directory (default: the default build)")
    parser.add_argument("--arch", default=archs.DEFAULT, help="x86_64 (default) or arm64")
    args = parser.parse_args()
    arch = archs.get(args.arch).name
    kernel_dir = args.kernel or str(kbuild.build(replace(kernel_choice.default_build_spec(),
                                                         arch=arch)).directory)
    image = kbuild.image_at(Path(kernel_dir))
    # Users run vmtest from bytecode (pip compiles it at install, Python caches it on
    # first import); with PYTHONDONTWRITEBYTECODE set, as on some CI hosts, every run
    # would compile ~50 modules first (~80 ms). Compile once, as an install does.
    compileall.compile_dir(str(Path(vmtest.__file__).parent), quiet=1)
    # The floor the ratios are taken against has the devices of the measured runs
    # (no NIC; virtio-serial ports for the command's stdin, stdout and stderr: the
    # benchmark's stdin is /dev/null, not a terminal); the second one those of a guest
    # vmtest talks SSH to (`vmtest run --ssh`, the plugin, scenarios), for reference.
    series: dict[str, list[float]] = {"floor (busybox init, poweroff)": [],
                                      "floor, SSH guest's devices (NIC)": [],
                                      "vmtest run --no-share -- true": [],
                                      "vmtest run -- true (cwd shared)": []}
    names = list(series)
    kinds = len(names)
    with tempfile.TemporaryDirectory(prefix="vmtest-bench-") as tmp:
        initrd = floor_initramfs(Path(tmp) / "floor.cpio", arch)
        measure = [
            lambda i: floor_run(image, initrd, args.accel, Path(tmp) / f"floor{i}.log",
                                network=False, ports=PORT_NAMES, arch=arch),
            lambda i: floor_run(image, initrd, args.accel, Path(tmp) / f"floor-nic{i}.log",
                                arch=arch),
            lambda i: vmtest_run(args.kernel, args.accel, f"{tmp}/a{i}", False, arch),
            lambda i: vmtest_run(args.kernel, args.accel, f"{tmp}/b{i}", True, arch)]
        for how in measure[2:]:  # unmeasured: what a user's first run fills (caches)
            how(-1)
        for i in range(args.runs):
            # the order turns each round: no kind always follows the same one
            for k in ((i + j) % kinds for j in range(kinds)):
                series[names[k]].append(measure[k](i))
            print(f"run {i}: " + ", ".join(f"{v[-1]:.2f} s" for v in series.values()),
                  flush=True)
    floor = statistics.median(series[names[0]])
    print(f"kernel {image} ({arch}); accelerator {args.accel}; {args.runs} runs each, "
          "interleaved; "
          f"{os.cpu_count()} cores")
    for name, values in series.items():
        med = statistics.median(values)
        print(f"{name:<34} min {min(values):.2f} s, median {med:.2f} s, "
              f"max {max(values):.2f} s, {med / floor:.2f}x the floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
