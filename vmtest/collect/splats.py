"""Kernel splats: which lines open one, which lines of one event belong together, and
the frame to blame.

The dmesg scan hands over every line that may open a splat (dmesg.SPLAT_STARTS, and the
OOM and allocation-failure headers found by their markers), with where the line ends in
the normalised text. `events()` classifies them, folds the lines of one event into one
Splat (a page fault's "BUG: unable to handle..." and its "Oops:" line, "kernel BUG at"
and its "invalid opcode"/"Internal error: Oops - BUG", a crash and the panic it caused,
an OOM header and its "Out of memory: Killed process"), reads each event's stack from
the lines after it, and picks the culprit: the faulting instruction's function where
the event is a fault, else the first frame that is not report machinery.

Forms: x86-64, i386, arm64, arm, powerpc, s390, riscv, loongarch and MIPS kernels from
3.x to 6.x (their "RIP:", "IP:", "pc :", "PC is at", "NIP", "epc" lines; frames with and
without addresses, "? " and "(unreliable)" marking guesses, arm's "callee from caller";
each architecture's stack dump and trap entry skipped as report machinery).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Splats that mean the kernel is broken, not just noisy (`vmtest dmesg --fail-on-splat`).
CRASH_KINDS = ("panic", "oops", "bug", "kasan", "kfence", "kmsan", "ubsan")

# (kind, pattern whose group 1 is the title, role). Roles: "fault" opens an event whose
# Oops line follows; "oops" joins an open fault, else opens an oops; "panic" joins the
# event that caused it; "oom-kill" joins the OOM header before it.
_CLASSES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (kind, re.compile(pattern, re.A), role) for kind, pattern, role in (
        ("panic", r"Kernel panic - not syncing: ?(.*)", "panic"),
        ("bug", r"(kernel BUG at .*)", "fault"),
        ("bug", r"(Kernel bug detected.*)", "fault"),
        ("kasan", r"BUG: (KASAN: .*)", ""),
        ("kfence", r"BUG: (KFENCE: .*)", ""),
        ("kcsan", r"BUG: (KCSAN: .*)", ""),
        ("kmsan", r"BUG: (KMSAN: .*)", ""),
        ("soft-lockup", r"(?:(?:NMI )?watchdog: )?BUG: (soft lockup - .*)", ""),
        ("soft-lockup", r"BUG: (workqueue lockup - .*)", ""),
        ("hard-lockup", r"(?:NMI )?watchdog: ((?:CPU\d+: )?Watchdog detected hard LOCKUP.*)",
         ""),
        ("oops", r"BUG: ((?:kernel NULL pointer dereference|unable to handle|Unable to handle"
                 r"|Kernel NULL pointer|Kernel access|Kernel bad access|Kernel instruction"
                 r"|Kernel data access|stack guard page).*)", "fault"),
        ("bug", r"BUG: (.*)", ""),
        ("oops", r"(Unable to handle kernel .*)", "fault"),
        ("oops", r"(kernel tried to execute .*)", "fault"),
        ("oops", r"(Kernel attempted to .*)", "fault"),
        ("oops", r"((?:Oops|Internal error)\b.*)", "oops"),
        ("oops", r"((?:general protection fault|invalid opcode|stack segment|divide error"
                 r"|double fault|kernel stack overflow)\b.*)", "oops"),
        ("warning", r"WARNING: (?:CPU: \d+ PID: \d+ at |at )(.*)", ""),
        # lockdep's and the unwinder's reports (a "WARNING: " line that is just a
        # message, e.g. a deprecation notice between "=" lines, is not a splat)
        ("warning", r"WARNING: ((?:possible|suspicious|inconsistent|bad unlock|held lock"
                    r"|lock held|nested lock|[A-Z]+IRQ-|kernel stack|stack recursion).*)", ""),
        # (kernel/hung_task.c; since 2026 "blocked in I/O wait for more than" where the
        # task waits for I/O)
        ("hung-task", r"INFO: (task .* blocked (?:in I/O wait )?for more than .*)", ""),
        ("rcu-stall", r"(?:rcu: )?INFO: (rcu_\w+ .*stall.*)", ""),
        ("ubsan", r"UBSAN: (.*)", ""),
        ("oom", r"(.* invoked oom-killer: .*)", "oom"),
        ("oom", r"((?:Out of memory|Memory cgroup out of memory)\b.*)", "oom-kill"),
        ("alloc-failure", r"(.*page allocation (?:failure|stalls for).*)", ""),
    ))
# A panic that a splat before it caused (Fatal exception, panic_on_warn, ...).
_CAUSED_PANIC = re.compile(r"Fatal exception|panic_on_warn|panic_on_oops|hung_task|softlockup"
                           r"|hard ?LOCKUP|RCU Stall|Oops|Attempted to kill init|kernel BUG"
                           r"|KASAN|KFENCE|UBSAN|Aiee|corrupted stack end", re.I)
# A fault's first line that only announces the headline after it.
_PREFACE = re.compile(r"(?:kernel tried to execute|Kernel attempted to)")
# How far (lines) an Oops line may follow its fault, and a panic the splat it ends.
_OOPS_WINDOW = 80
_PANIC_WINDOW = 400
# A splat's stack is read from the lines after it, up to the next event or this many.
STACK_WINDOW = 200

# A frame's function: "f+0x1c/0x40", or as scripts/decode_stacktrace.sh prints it,
# "f (kernel/futex/core.c:661".
_FUNC = r"[A-Za-z_][\w.]*(?:\+0x[0-9a-f]+/0x[0-9a-f]+|(?=\ \([\w./-]+:\d+))"
# The faulting instruction: x86 RIP/EIP/IP (kernel segments only), arm64/riscv pc/epc,
# arm/old arm64 "PC is at", powerpc NIP, with or without the address before the symbol.
_IP = (r"""(?:RIP:\ (?!0033:|0023:|e033:|e02b:)(?:[0-9a-f]{4}:)?
      | EIP:\ (?:[0-9a-f]{4}:)? | EIP\ is\ at\ | IP:\ | pc\ :\ | epc\ :\ | PC\ is\ at\ | NIP\ +)
    (?:\[<?[0-9a-f]+>?\]\ +)*(?P<ip>""" + _FUNC + ")")
# A stack frame: "[<address>] " and powerpc's "[sp] [ip] " before, "? " (x86) or
# " (unreliable)" (powerpc) marking a guess. arm's frames name a function and its caller
# (arch/arm/kernel/traps.c dump_backtrace_entry(): " %ps from %pS", with
# CONFIG_BACKTRACE_VERBOSE "[<%08lx>] (%ps) from [<%08lx>] (%pS)", before 3.x "(%pS)"
# for both): the frame read is the caller, whose offset is printed; the first callee is
# the unwinder itself.
_FRAME = (r"(?:(?:\[<?[0-9a-f]+>?\]\ +)?\(?[A-Za-z_][\w.]*(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?\)?"
          r"\ from\ (?:\[<?[0-9a-f]+>?\]\ +)?\(?"
          r"|(?:\[<?[0-9a-f]+>?\]\ +)*(?P<q>\?\ )?)(?P<f>" + _FUNC
          + r")(?P<u>\ \(unreliable\))?")
# The lines after a splat that matter, each at a line start after the (normalised)
# prefix: its end, a "Call Trace:" header, an interrupt context marker ("<IRQ>",
# "</IRQ>", "<EOI>") with or without a frame after it, the faulting instruction, a frame.
_TAIL = re.compile(r"""\n(?>[\ \t]*(?:<\d+>)?(?:\d+,\d+,\d+,[^;\n]*;)?(?:\[\ *\d+\.\d+\]\ ?)?)
    (?:(?P<end>---\[\ end|Kernel\ Offset:)
     | [ \t]*(?P<hdr>Call\ Trace:?|Call\ trace:|Backtrace:)[ \t]*(?=\n|\Z)
     | [ \t]*(?:<(?P<ctx>/?[A-Z]+)>[ \t]*)?(?:""" + _IP + "|" + _FRAME + r"""
                                              | (?<=[A-Z]>)))""",  # a marker alone
                   re.X | re.A)
# At most STACK_WINDOW lines of a splat are read, and its frames up to this many after
# its call trace header (the culprit is among the first).
_FRAMES_READ = 24
# At most STACK_WINDOW lines of a splat are read.
_WINDOW = re.compile(rf"(?:\n[^\n]*){{1,{STACK_WINDOW}}}")
_TITLE_FUNC = re.compile(r"\b(?:in|at) (?:\S+:\d+ )?([A-Za-z_]\w*)(?:\.[\w.]*)?(?:\+0x|\b)",
                         re.A)

# Functions that report, not cause: the culprit is the first frame after them.
_MACHINERY = re.compile(r"""(?:
    dump_stack\w* | __dump_stack | show_stack\w* | dump_backtrace\w* | show_regs | __show_regs
  | show_trace\w* | print_stack_trace | sched_show_task | show_state_filter
  | panic | nmi_panic | vpanic | __warn\w* | warn_slowpath\w* | warn_bogus_irq_restore
  | report_bug | handle_bug | do_trap | do_error_trap | do_invalid_op | invalid_op | die
  | __die\w* | oops_\w+ | exc_\w+ | asm_exc_\w+ | asm_sysvec_\w+ | sysvec_\w+ | bug_handler
  | call_break_hook | brk_handler | do_debug_exception | el1_\w+ | el0_\w+ | do_el0_\w+
  | do_mem_abort | do_translation_fault | do_bad_area | __do_kernel_fault | do_page_fault
  | __do_page_fault | page_fault | page_fault_oops | do_user_addr_fault | do_kern_addr_fault
  | kernelmode_fixup_or_oops | no_context | __bad_area\w* | bad_area\w* | bad_page_fault
  | __bad_page_fault | program_check_exception | program_check_common\w* | handle_page_fault
  | data_access_common\w* | do_program_check | do_bug
  | kasan_\w+ | __kasan_\w+ | __asan_\w+ | asan_\w+ | print_address_description\w*
  | print_report | describe_object\w* | check_memory_region\w* | check_region_inline
  | memory_is_poisoned\w* | kfence_\w+ | __kfence_\w+ | kcsan_\w+ | __tsan_\w+ | kmsan_\w+
  | __msan_\w+ | ubsan_\w+ | __ubsan_\w+ | ubsan_epilogue | handle_overflow
  | handle_null_ptr_deref | handle_misaligned_access | handle_object_size_mismatch
  | ubsan_type_mismatch_common
  | bad_page | free_page_is_bad\w* | check_free_page\w* | check_new_page\w* | __dump_page
  | dump_page | print_bad_pte
  | __might_sleep | __might_resched | ___might_sleep | __might_fault | __schedule_bug
  | __cant_sleep | __cant_migrate
  | lockdep_\w+ | __lock_acquire\w* | lock_acquire\w* | lock_release | __lock_release
  | print_circular_bug\w* | check_noncircular | check_prev_add | check_prevs_add
  | validate_chain | print_usage_bug | mark_lock\w* | print_deadlock_bug | check_deadlock
  | __lockdep_\w+ | lock_is_held_type | debug_check_no_locks_freed
  | _raw_\w+ | do_raw_\w+ | queued_\w+ | native_queued_\w+ | __pv_queued_\w+
  | warn_alloc\w* | __alloc_pages\w* | alloc_pages\w* | alloc_page_\w+ | __folio_alloc\w*
  | folio_alloc\w* | __get_free_pages\w* | get_zeroed_page | out_of_memory
  | oom_kill_process | __oom_kill_process | dump_header | __alloc_pages_slowpath\w*
  | alloc_pages_mpol\w*
  | rcu_dump_cpu_stacks | print_cpu_stall\w* | check_cpu_stall | rcu_sched_clock_irq
  | nmi_cpu_backtrace\w* | nmi_trigger_cpumask_backtrace | arch_trigger_cpumask_backtrace
  | trigger_single_cpu_backtrace | watchdog_timer_fn | watchdog_overflow_callback
  | check_hung_uninterruptible_tasks | watchdog | check_hung_task
  # Each architecture's stack dump and trap entry (arch/*/kernel/traps.c, stacktrace.c,
  # unwind*.c, mm/fault.c): x86 and i386, arm64, arm, powerpc, s390, riscv, loongarch, MIPS.
  | show_trace_log_lvl | show_stack_log_lvl | show_iret_regs | show_opcodes
  | handle_exception | common_exception\w* | do_int3\w* | do_general_protection
  | el1h_\w+ | el0t_\w+ | do_el1_\w+ | arm64_notify_die | bug_brk_handler | early_brk64
  | do_kernel_fault | __do_kernel_fault\w* | arm64_\w+_fault | do_sea | do_alignment_fault
  | unwind_backtrace | c_backtrace | arm_notify_die | do_undefinstr | __und_svc\w*
  | __dabt_svc | __pabt_svc | do_DataAbort | do_PrefetchAbort | do_sect_fault | do_alignment
  | ___do_page_fault | _exception\w* | do_exception | hash__do_page_fault
  | do_report_trap | illegal_op | do_no_context | do_low_address | do_protection_exception
  | do_dat_exception | __do_pgm_check | pgm_check_handler | do_pgm_check
  | walk_stackframe | handle_break | do_trap_\w+
  | show_backtrace | show_raw_backtrace | do_bp | handle_bp | do_ri | handle_ri
  | do_trap_or_bp | tlb_do_page_fault\w* | handle_tl[bs]\w* | do_ade | handle_ade[ls]
  | die_if_kernel | __die_if_kernel
)$""", re.X | re.A)
# Functions that WARN about their caller's mistake (lib/refcount.c, lib/list_debug.c,
# lib/debugobjects.c, kernel/dma/debug.c, mm/usercopy.c): for such a warning the culprit
# is the first frame that is not one of them or report machinery.
_CHECKERS = re.compile(r"""(?:
    refcount_\w+ | __list_add_valid\w* | __list_del_entry_valid\w*
  | debug_print_object | check_unmap | check_sync | check_for_stack | check_for_illegal_area
  | usercopy_warn | usercopy_abort | __check_object_size\w* | __check_heap_object
)$""", re.X | re.A)
# For a hung task, also the waiting itself: the culprit is what waits.
_WAITING = re.compile(r"""(?:
    __schedule | schedule\w* | io_schedule\w* | __switch_to\w* | context_switch | preempt_\w+
  | wait_for_completion\w* | __wait_for_common | do_wait_for_common | wait_for_common\w*
  | __mutex_lock\w* | mutex_lock\w* | __rwsem_\w+ | rwsem_down_\w+ | down_read\w*
  | down_write\w* | __down\w* | down | down_\w+ | rt_mutex\w* | __rt_mutex\w*
  | __wait_on_bit\w* | out_of_line_wait_on_bit\w* | bit_wait\w* | folio_wait\w*
  | __folio_lock\w* | wait_on_page_bit\w* | __lock_page\w* | io_wait_event\w*
  | __flush_work | flush_work | __flush_workqueue | flush_workqueue | synchronize_rcu\w*
  | __synchronize_srcu | synchronize_srcu\w* | __wait_rcu_gp | wait_rcu_gp | percpu_\w+
  | _raw_spin_lock\w* | _raw_read_lock\w* | _raw_write_lock\w* | queued_\w+
  | native_queued_\w+ | do_raw_spin_lock | __pv_queued_\w+
)$""", re.X | re.A)
# For an OOM or an allocation failure, also the allocators: the culprit is their caller.
_ALLOCATING = re.compile(r"""(?:
    alloc_slab_page | allocate_slab | new_slab\w* | ___slab_alloc\w* | __slab_alloc\w*
  | slab_alloc\w* | kmem_cache_alloc\w* | __kmem_cache_alloc\w* | __kmalloc | __kmalloc_node
  | __kmalloc_track_caller | __kmalloc_node_track_caller | __kmalloc_noprof
  | __kmalloc_node_noprof | __kmalloc_cache_noprof | kmalloc_trace\w* | kmalloc_large\w*
  | kmalloc_order\w* | __kmalloc_large\w* | alloc_pages_current | __get_free_pages
  | __vmalloc\w* | vmalloc\w* | __alloc_pages_bulk\w* | alloc_pages_bulk\w*
  # SLAB's (mm/slab.c, before 6.5) refill path
  | cache_alloc_refill | ____cache_alloc\w* | __do_cache_alloc | fallback_alloc | cache_grow\w*
  | kmem_getpages
  # the memory cgroup's charge path and reclaim: the culprit is what asked for memory
  | mem_cgroup_out_of_memory | mem_cgroup_oom\w* | try_charge\w* | charge_memcg
  | __mem_cgroup_charge | mem_cgroup_charge\w* | obj_cgroup_charge\w* | __memcg_kmem_charge\w*
  | pagefault_out_of_memory | __perform_reclaim | try_to_free_pages | do_try_to_free_pages
  | alloc_pages_vma | vma_alloc_folio\w* | alloc_anon_folio | __page_cache_alloc\w*
)$""", re.X | re.A)
# Kinds whose culprit is where the CPU was: the faulting/stuck instruction.
_IP_KINDS = ("oops", "soft-lockup", "hard-lockup", "rcu-stall")
# Kinds whose title names the culprit ("KASAN: use-after-free in f+0x1/0x2").
_TITLE_KINDS = ("kasan", "kfence", "kcsan", "kmsan")


@dataclass
class Splat:
    kind: str
    title: str
    stack: list[str]
    timestamp: float | None
    culprit: str | None = None
    line: int | None = None  # 1-based, in the log as given
    panic: bool = False  # the event ended in a panic (its "Kernel panic" line folded in)
    parts: list[str] = field(default_factory=list)  # the other lines folded in

    @property
    def crash(self) -> bool:
        return self.kind in CRASH_KINDS or self.panic

    def record(self) -> dict[str, object]:
        """The event as `vmtest dmesg --json` lists it."""
        return {"type": "splat", "kind": self.kind, "title": self.title,
                "culprit": self.culprit, "crash": self.crash, "panic": self.panic,
                "line": self.line, "timestamp": self.timestamp, "stack": self.stack,
                "parts": self.parts}


def classify(line: str) -> tuple[str, str, str] | None:
    """(kind, title, role) of a line that may open a splat, or None."""
    for kind, pattern, role in _CLASSES:
        m = pattern.match(line)
        if m:
            return kind, m.group(1).strip(), role
    return None


def _function(frame: str) -> str:
    """"f.isra.0+0x1/0x2" -> "f"."""
    return frame.split("+", 1)[0].split(".", 1)[0]


@dataclass
class _Event:
    splat: Splat
    start: int  # where its first line ends in the text
    line_no: int
    role: str
    joined: bool = False  # its Oops line (a fault) or its kill (an OOM) is folded in


def events(text: str, candidates: list[tuple[int, str, float | None]],
           line_numbers: list[int]) -> list[Splat]:
    """The splats of `text` ("\\n" + the normalised log) from the candidate lines
    (end of the line in text, the line without prefix, its time) in text order;
    line_numbers[i]: the 1-based line of candidate i."""
    out: list[_Event] = []
    for (end, line, ts), line_no in zip(candidates, line_numbers, strict=True):
        found = classify(line)
        if found is None:
            continue
        kind, title, role = found
        last = out[-1] if out else None
        if last is not None:
            gap = line_no - last.line_no
            if gap <= 2 and title == last.splat.title:  # the same line logged twice
                continue
            if role == "fault" and last.role == "fault" and not last.joined \
                    and gap <= 3:  # "kernel tried to execute..." + "BUG: unable to handle..."
                if _PREFACE.match(last.splat.title):  # the headline is the second line
                    last.splat.parts.append(last.splat.title)
                    last.splat.title = title
                else:
                    last.splat.parts.append(line)
                continue
            if role == "oops" and last.role == "fault" and not last.joined \
                    and gap <= _OOPS_WINDOW:
                last.joined = True
                last.splat.parts.append(line)
                continue
            if role == "panic" and not last.splat.panic and gap <= _PANIC_WINDOW \
                    and _CAUSED_PANIC.search(title):
                last.splat.panic = True
                last.splat.parts.append(line)
                continue
            if role == "oom-kill" and last.role == "oom" and not last.joined:
                last.joined = True
                last.splat.parts.append(line)
                continue
        out.append(_Event(Splat(kind, title, [], ts, line=line_no), end, line_no, role))
    for i, event in enumerate(out):
        # up to where the next event's first line starts
        stop = text.rfind("\n", 0, out[i + 1].start) if i + 1 < len(out) else len(text)
        _read_stack(text, event.splat, event.start, max(stop, event.start))
    return [e.splat for e in out]


def _read_stack(text: str, splat: Splat, start: int, stop: int) -> None:
    """The event's stack (the faulting instruction first, then up to 8 frames) and its
    culprit, from the lines in text[start:stop] up to an end marker or STACK_WINDOW."""
    ips: list[str] = []
    frames: list[tuple[str, bool]] = []
    trace_at = irq_end_at = -1  # where in frames a "Call Trace:" / the end of an IRQ was
    window = _WINDOW.match(text, start, stop)
    for m in _TAIL.finditer(text, start, window.end() if window else start):
        end, hdr, ctx, ip, guess, frame, unreliable = m.groups()
        if ctx in ("/IRQ", "EOI") and irq_end_at < 0:
            irq_end_at = len(frames)
        if frame is not None:
            frames.append((frame, guess is None and unreliable is None))
            if trace_at >= 0 and len(frames) - trace_at >= _FRAMES_READ:
                break
        elif ip is not None:
            ips.append(ip)
        elif end is not None:
            break
        elif hdr is not None and trace_at < 0:
            trace_at = len(frames)
    if trace_at > 0:  # frames before the trace: "Preemption disabled at:", irq stamps
        frames = frames[trace_at:]
        irq_end_at = max(irq_end_at - trace_at, -1)
    every = [f for f, _ in frames]
    splat.stack = (ips[:1] + [f for f in every if not ips or f != ips[0]])[:8]
    if splat.kind in _IP_KINDS and not ips and irq_end_at > 0:
        frames = frames[irq_end_at:]  # a stall seen from a timer interrupt: what it stopped
    splat.culprit = _culprit(splat, ips, [f for f, ok in frames if ok] or
                             [f for f, _ in frames])


def _culprit(splat: Splat, ips: list[str], frames: list[str]) -> str | None:
    if splat.kind in _TITLE_KINDS and (m := _TITLE_FUNC.search(splat.title)):
        return m.group(1)
    checker = False  # the warning is a checker's about its caller (refcount, lists...)
    if splat.kind == "warning" and (m := re.search(r"\b(" + _FUNC + ")", splat.title)):
        if not _CHECKERS.match(_function(m.group(1))):
            return _function(m.group(1))
        checker = True
    fault = splat.kind in _IP_KINDS or splat.title.startswith(("kernel BUG", "Kernel bug"))
    if ips and (fault or splat.kind == "warning") and not checker:
        return _function(ips[0])
    for frame in frames:
        name = _function(frame)
        if _MACHINERY.match(name) or _CHECKERS.match(name):
            continue
        if splat.kind == "hung-task" and _WAITING.match(name):
            continue
        if splat.kind in ("oom", "alloc-failure") and _ALLOCATING.match(name):
            continue
        return name
    return _function(ips[0]) if ips else None
