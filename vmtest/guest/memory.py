"""Memory blocks in the guest (Documentation/admin-guide/mm/memory-hotplug.rst): the shell
commands that list, online and offline them, and the parsers of what they print. Pure;
the hotplug scenario and the pytest plugin's helpers run them."""

from __future__ import annotations

import re
import shlex

MEMORY_SYSFS = "/sys/devices/system/memory"
# x86-64's memory block: MIN_MEMORY_BLOCK_SIZE (arch/x86/mm/init_64.c), what a guest of
# this size uses; a block is the unit of onlining and offlining.
BLOCK_MIB = 128
PAGE_SIZE = 4096  # x86-64 and vmtest's arm64 kernels (4K pages)
PAGES_PER_BLOCK = (BLOCK_MIB << 20) // PAGE_SIZE
# The states a block can be put in (drivers/base/memory.c, state_store()).
STATES = ("online", "online_movable", "online_kernel", "offline")

OFFLINE_BLOCKS_COMMAND = f"grep -l offline {MEMORY_SYSFS}/memory*/state || true"

# CMA areas: debugfs allocates and frees (mm/cma_debug.c), sysfs counts (mm/cma_sysfs.c).
CMA_DEBUGFS = "/sys/kernel/debug/cma"
CMA_SYSFS = "/sys/kernel/mm/cma"
FIRST_CMA_AREA_COMMAND = f"ls {CMA_DEBUGFS} | head -1"


def block_start_pfn(block: str) -> int:
    """'memory40' -> the first pfn of that block."""
    return int(block.removeprefix("memory")) * PAGES_PER_BLOCK


def parse_blocks(out: str) -> set[str]:
    """Block names from the paths OFFLINE_BLOCKS_COMMAND prints."""
    return {line.rsplit("/", 2)[1] for line in out.split()}


def set_state_command(blocks: list[str], state: str) -> str:
    if state not in STATES:
        raise ValueError(f"unknown memory block state {state!r}; states: {', '.join(STATES)}")
    return "; ".join(f"echo {state} > {MEMORY_SYSFS}/{shlex.quote(b)}/state" for b in blocks)


def offline_command(block: str, timeout_s: float) -> str:
    """Offline one block with a time bound (offline_pages() retries forever on a busy
    block); prints 'rc=STATUS state=STATE start=UPTIME end=UPTIME'."""
    path = f"{MEMORY_SYSFS}/{shlex.quote(block)}/state"
    return ("s=$(cut -d' ' -f1 /proc/uptime); "
            f"timeout {timeout_s} sh -c 'echo offline > {path}' 2>/dev/null; "
            "rc=$?; e=$(cut -d' ' -f1 /proc/uptime); "
            f"st=$(cat {path}); "
            'echo "rc=$rc state=$st start=$s end=$e"')


def parse_offline_result(out: str) -> dict[str, str]:
    """The fields of offline_command()'s result line."""
    line = next((x for x in out.splitlines() if x.startswith("rc=")), "")
    return dict(w.split("=", 1) for w in line.split() if "=" in w)


# Every memory block the guest has (online or offline): a block virtio-mem unplugged
# is removed, its folder gone (offline_and_remove_memory(), mm/memory_hotplug.c).
PRESENT_BLOCKS_COMMAND = f"ls -d {MEMORY_SYSFS}/memory[0-9]*"


def parse_present_blocks(out: str) -> set[str]:
    """Block names from the paths PRESENT_BLOCKS_COMMAND prints."""
    return {line.rsplit("/", 1)[1] for line in out.split() if "/memory" in line}


# A scenario's step marked in the kernel's log (at KERN_INFO: the ring buffer, not the
# console), so that the instrumentation's summaries printed between a step's two marks
# are that step's: a summary line and a mark carry the same printk clock.
MARK = "vmtest-scenario:"


def mark_command(step: str, edge: str) -> str:
    """Write 'vmtest-scenario: step=STEP EDGE' into the kernel's log (/dev/kmsg)."""
    return f"echo '<6>{MARK} step={step} {edge}' > /dev/kmsg"


def parse_marks(dmesg_text: str) -> dict[str, tuple[float, float | None]]:
    """{step: (begin time, end time or None)} from the marks in a dmesg text (printk
    times, '[ 12.345678] vmtest-scenario: step=S begin')."""
    marks: dict[str, tuple[float, float | None]] = {}
    for m in _MARK_LINE.finditer(dmesg_text):
        step, edge, at = m.group(2), m.group(3), float(m.group(1))
        if edge == "begin":
            marks[step] = (at, None)
        elif step in marks:
            marks[step] = (marks[step][0], at)
    return marks


_MARK_LINE = re.compile(r"^\[\s*(\d+\.\d+)\]\s*" + re.escape(MARK)
                        + r" step=(\S+) (begin|end)\s*$", re.M)
