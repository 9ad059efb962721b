"""The in-guest load: lru-stress on every vCPU (vmtest/guest/stressors/lru-stress.c), a
tmpfs fill, optional stress-ng. Pure: parameters in, guest shell commands out; the
scenarios run them."""

from __future__ import annotations

import dataclasses
import shlex

STRESSOR = "lru-stress"
STRESSOR_LOG = "/tmp/lru-stress.log"


@dataclasses.dataclass(frozen=True)
class LoadParams:
    """The in-guest load: lru-stress on every vCPU, a tmpfs fill, optional stress-ng."""

    stress_ops: str = "all"
    stress_workers: int = 0  # 0: one per vCPU
    stress_anon_mib: int = 16
    stress_file_mib: int = 16
    stress_burst: int = 14
    stress_pause_us: int = 2000
    fill_mib: int = 0  # tmpfs pages that stay put (movable, shmem)
    stress_refault_ms: int = 0  # re-fault the whole working set every N ms (0: never)
    stress_ng: str = ""  # extra background load, e.g. "--vm 1 --vm-bytes 64M --vm-keep"
    seed: int = 1
    # Fault injection to test the harness itself: "panic" crashes the guest (sysrq-c)
    # once the load runs.
    fault: str = ""


FAULTS = ("", "panic")
# sysrq-c: a NULL dereference in the sysrq handler, i.e. a real Oops -> panic (oops=panic).
PANIC_COMMAND = "echo c > /proc/sysrq-trigger"
RUNNING_COMMAND = f"pidof {STRESSOR} >/dev/null"
LOG_COMMAND = f"cat {STRESSOR_LOG} 2>/dev/null; true"
# TERM first (lru-stress prints its counters on the way out), KILL what is left.
STOP_COMMAND = (f"killall -TERM {STRESSOR} stress-ng 2>/dev/null; "
                f"for i in 1 2 3 4 5 6 7 8 9 10; do pidof {STRESSOR} >/dev/null || "
                f"break; sleep 0.5; done; killall -KILL {STRESSOR} stress-ng "
                "2>/dev/null; rm -f /dev/shm/fill; true")
# Re-fault the working set (the load's SIGUSR1 handler).
REFAULT_COMMAND = f"killall -USR1 {STRESSOR} 2>/dev/null"


def start_command(load: LoadParams, cpus: int) -> str:
    """Fill tmpfs, start the stressors detached from the SSH session, fail if they did
    not start."""
    workers = load.stress_workers or cpus
    parts = []
    if load.fill_mib:
        parts.append(f"dd if=/dev/zero of=/dev/shm/fill bs=1M count={load.fill_mib} "
                     "2>/dev/null")
    stress = [STRESSOR, "-w", str(workers), "-o", load.stress_ops,
              "-a", str(load.stress_anon_mib), "-f", str(load.stress_file_mib),
              "-b", str(load.stress_burst), "-p", str(load.stress_pause_us),
              "-s", str(load.seed), "-d", "/dev/shm", "-r", str(load.stress_refault_ms)]
    parts.append(f"setsid {shlex.join(stress)} > {STRESSOR_LOG} 2>&1 < /dev/null &")
    if load.stress_ng:
        ng = ["stress-ng", *shlex.split(load.stress_ng), "--timeout", "0"]
        parts.append(f"setsid {shlex.join(ng)} > /tmp/stress-ng.log 2>&1 < /dev/null &")
    return "\n".join([*parts, "sleep 0.2", RUNNING_COMMAND])
