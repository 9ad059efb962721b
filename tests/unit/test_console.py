"""Which console reports end a run (fatal) and which are only splats."""

import pytest

from vmtest.channel.console import find_crash


@pytest.mark.parametrize("line", [
    "Kernel panic - not syncing: Fatal exception",
    "Oops: 0002 [#1] PREEMPT SMP NOPTI",
    "general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP",
    "kernel BUG at mm/migrate.c:1234!",
    "BUG: kernel NULL pointer dereference, address: 0000000000000008",
    "BUG: unable to handle page fault for address: ffffffffff600000",
])
def test_fatal_reports_end_the_run(line):
    crash = find_crash(f"[   12.345678] {line}\r\n".encode(), complete_lines=True)
    assert crash is not None and crash.title == line


@pytest.mark.parametrize("line", [
    "watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [swapper/0:1]",
    "BUG: Bad page state in process lru-stress  pfn:2a3b4",
    "BUG: scheduling while atomic: kworker/0:1/12/0x00000002",
    "BUG: KASAN: use-after-free in migrate_folio+0x1/0x2",
    "WARNING: CPU: 1 PID: 77 at mm/page_alloc.c:5525 __alloc_pages+0x1a/0x30",
    "INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
])
def test_reports_the_kernel_survives_do_not(line):
    assert find_crash(f"[   12.345678] {line}\r\n".encode(), complete_lines=True) is None


def test_a_line_still_being_printed_waits_for_its_end():
    partial = b"[   64.466057] Kernel panic - not syncing: Fat"
    assert find_crash(partial, complete_lines=True) is None
    assert find_crash(partial + b"al exception\r\n", complete_lines=True).title == \
        "Kernel panic - not syncing: Fatal exception"
    # Once QEMU has exited nothing more comes: a cut line counts.
    assert find_crash(partial) is not None


# --- the Console's buffer: bounded, each line scanned once (socket pair, no QEMU)

def _console(max_bytes: int):
    import socket

    from vmtest.channel.console import Console

    ours, theirs = socket.socketpair()
    console = Console(ours, max_bytes=max_bytes)
    return console, theirs


def test_the_buffer_is_bounded_and_offsets_stay_those_of_the_whole_output():
    console, theirs = _console(max_bytes=4096)
    try:
        line = b"[    1.000000] random: crng init done, a line of ordinary chatter\r\n"
        for _ in range(1000):  # ~70 KB, 17 times the buffer
            console.feed(line)
        assert len(console.snapshot()) <= 4096
        assert console.end == 1000 * len(line)
        # a reader past the kept part gets what comes next, at whole-output offsets
        offset = console.end
        console.feed(b"VMTEST-READY 6.1\n")
        assert console.wait_data(offset, 0) == b"VMTEST-READY 6.1\n"
        assert console.tail(1) == "VMTEST-READY 6.1"
        assert console.crash is None
    finally:
        theirs.close()
        console.close()


def test_a_crash_is_found_once_its_line_ends_even_across_chunks_and_trims():
    console, theirs = _console(max_bytes=4096)
    try:
        console.feed(b"x" * 5000 + b"\n")  # trimmed past
        console.feed(b"[   64.466057] Kernel panic - not syncing: sysrq trig")
        assert console.crash is None and console.final_crash() is not None
        console.feed(b"gered crash\r")
        assert console.crash is None  # the line has not ended
        console.feed(b"\n[   64.5] Kernel Offset: disabled\n")
        crash = console.crash
        assert crash is not None and crash.title == "Kernel panic - not syncing: sysrq " \
                                                     "triggered crash"
        assert crash.offset == 5001 + len(b"[   64.466057] ")
        console.feed(b"Oops: 0002 [#2]\n")
        assert console.crash is crash  # the first one stays
    finally:
        theirs.close()
        console.close()
