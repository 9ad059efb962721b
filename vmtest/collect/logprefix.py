"""Kernel logs as people have them -> the one form the dmesg scan reads.

A kernel line reaches a bug report behind all kinds of prefixes: printk's own time and
caller id ("[  294.055186][T10694] "), a syslog or journal header ("Nov 29 12:00:00 host
kernel: "), `dmesg -T/-H/-d/-x` forms, a poster's indentation, or user-space output
glued in front of it on a serial console. `normalize()` takes each line's prefixes off
and leaves "[<time>] <message>" (the time where the kernel printed one) or the bare
message, and counts which prefix forms it found.

Lines already in the scan's own form -- leading blanks, then an optional "<N>" priority,
an optional /dev/kmsg header and an optional "[   s.us]" time -- are left exactly as
they are, so a log that needs nothing comes back as the same object.

"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

# The prefix forms, in the order of the report.
FORMS = ("priority", "kmsg", "syslog", "iso", "host-kernel", "dmesg-x", "printk-time",
         "delta", "relative", "dmesg-T", "dmesg-H", "caller-id", "quote", "line-number",
         "indent", "glued")

# One prefix at the current position. Every alternative starts with a different
# character class or literal, so the order matters only where noted.
_STEP = re.compile(r"""(?:
    <(?P<priority>\d{1,3})>
  | (?P<kmsg>\d+,\d+,\d+,[^;\n]*;)
    # "Nov 29 12:00:00[.123456] " (BSD syslog, journalctl's short forms; a month in the
    # host's language: "heinä 04 18:52:54")
  | (?P<syslog>[^\s\d\[<>]\S*\ +\d{1,2}\ \d\d:\d\d:\d\d(?:\.\d+)?\ )
    # "2026-11-29T12:00:00[.,]123456+01:00 " (journalctl -o short-iso, dmesg --time-format iso)
  | (?P<iso>\d{4}-\d\d-\d\d[T\ ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\ +)
    # a viewer's line number before a syslog date or a printk time
  | (?P<lineno>\d+\ +)(?=[A-Z][a-z]{2}\ [\ \d]\d\ \d\d:|\[)
  | (?P<dmesgx>(?:kern|user|mail|daemon|auth|syslog|lpr|news|uucp|cron|authpriv|ftp
                 |local[0-7])\ *:(?:emerg|alert|crit|err|warn|notice|info|debug)\ *:\ ?)
    # "[   12.345678]", "[   12.345678 <    0.000123>]" (dmesg -d)
  | (?P<time>\[\ *\d+\.\d+)(?:@\d+)?(?P<delta>\ <\ *\d+\.\d+>)?\]\ ?
    # "[  +0.083841]" (dmesg -H), "[<    0.000123>]" (dmesg --time-format delta)
  | (?P<relative>\[(?:\ *\+\d+\.\d+|<\ *\d+\.\d+>)\]\ ?)
  | (?P<dmesgT>\[[A-Z][a-z]{2}\ [A-Z][a-z]{2}\ [\ \d]\d\ \d\d:\d\d:\d\d\ \d{4}\]\ ?)
  | (?P<dmesgH>\[[A-Z][a-z]{2}\d\d\ \d\d:\d\d\]\ ?)
    # "[T123]", "[    C1]", and Android's "[cpu:  comm:pid]", maybe after more blanks
  | (?P<caller>\ *\[\ *[TC]\d+\]\ ?)
  | (?P<android>\ *\[\d+:[^\]\n]*:\d+\]\ ?)
    # mail quoting ("> ", ">> ")
  | (?P<quote>>\ ?)
    # "myhost kernel: ", "kernel: "
  | (?P<hostkernel>(?:[\w.-]+\ )?kernel:\ ?)
)""", re.X | re.A)
_NAMES = {"priority": "priority", "kmsg": "kmsg", "syslog": "syslog", "iso": "iso",
          "dmesgx": "dmesg-x", "time": "printk-time", "delta": "delta", "relative": "relative",
          "dmesgT": "dmesg-T", "dmesgH": "dmesg-H", "caller": "caller-id", "android": "caller-id",
          "quote": "quote", "lineno": "line-number",
          "hostkernel": "host-kernel"}
# A printk time after other text on the line: kernel output glued to user-space output
# on a console. Six digits after the point and a space or caller id after it, so that
# text in brackets is not taken for one.
_GLUED = re.compile(r"\[\ *\d+\.\d{6}\](?=[\ \[])", re.A)
_INDENT = re.compile(r"[ \t]+")
# Prefix steps a line may take and still be in the scan's own form, in this order.
_PLAIN = ("priority", "kmsg", "time")
_MAX_STEPS = 8


def _line(line: str, counts: Counter[str]) -> str:
    """One line without its prefixes (see the module's doc)."""
    im = _INDENT.match(line)
    pos = im.end() if im else 0
    found: list[str] = []
    stamp: str | None = None
    glued = cpu_time = False
    while len(found) < _MAX_STEPS:
        m = _STEP.match(line, pos)
        if m is None:
            if found or glued:
                break
            gm = _GLUED.search(line, pos)
            if gm is None:
                break
            glued = True
            pos = gm.start()
            continue
        kind = str(m.lastgroup)  # "delta": a dmesg -d time, whose last group is the delta
        counts[_NAMES[kind]] += 1
        if kind in ("time", "delta") and stamp is None:
            stamp = m.group("time") + "]"
            # "[   7.910564@0]": a vendor kernel's CPU number after the time (Amlogic
            # 3.10), which the scan does not read: the time is written without it.
            cpu_time = kind == "time" and "@" in m.group(0)
        found.append(kind)
        pos = m.end()
    if found and im:
        counts["indent"] += 1
    if glued:
        counts["glued"] += 1
    if not glued and not cpu_time and found == [k for k in _PLAIN if k in found]:
        return line  # nothing to take off, or only what the scan reads itself
    rest = line[pos:]
    return f"{stamp} {rest}" if stamp is not None else rest


# Where _STEP may match, cheaply: true wherever it matches (and at a few more places,
# where _line() then finds nothing to do). Possessive and dispatched on the first
# character, so that a message's first word costs one look; one per _STEP alternative:
# priority, kmsg, iso, line number, a digit-led host before "kernel:"; time, delta,
# relative, dmesg -T/-H, caller id (also after blanks), Android's caller; quote -- and,
# led by a letter (HINT_WORD): syslog, dmesg -x, host-kernel.
HINT_SIGN = r"""(?:<\d | \d++(?:,|-|\ ++[A-Z\[]|[\w.-]*+\ kernel:)
  | \ *+\[(?:\ *+[\d+TC]|<\ *\d|[A-Z])
  | >)"""
HINT_WORD = r"""(?:[^\s\d\[<>]\S*+\ ++(?:\d{1,2}\ \d\d:|kernel:)
  | \w++\ *+:(?:emerg|alert|crit|err|warn|notice|info|debug)
  | kernel:)"""
HINT = f"(?:{HINT_SIGN}|{HINT_WORD})"
# A printk time that _line() leaves as it is, after its "[" (possessive: this runs on
# every line; a time with "@cpu" is rewritten).
_STAMP_REST = r"\ *+\d++\.\d++\]"
# The rest of a line up to a printk time glued into it (_GLUED), a "[" at a time: the
# characters between cost one look each.
# (Atomic, not a possessive repeat of the group: CPython 3.11.2's re, Debian 12's, never
# matches that form here.)
TO_GLUED = (r"(?>[^\n\[]*+(?:(?!" + _GLUED.pattern + r")\[[^\n\[]*+)*)(?="
             + _GLUED.pattern + ")")


def _work_line(hint: str) -> str:
    """A line (its start, after "\\n") that _line() may change or count something other
    than one printk time on, where `hint` says where a prefix may start. Every other line
    either starts with a printk time that no other prefix follows (_line() counts it and
    leaves it) or has nothing at its start after blanks that is a prefix and no time glued
    into it (_line() leaves it, counts nothing)."""
    return (r"(?!\[" + _STAMP_REST + r"\ ?+(?!" + hint + r"))"
            r"(?:\[|[\ \t]*+(?=" + hint + r")|" + TO_GLUED + ")")


WORK_LINE = _work_line(HINT)
_WORK_LINE = re.compile(r"\n" + WORK_LINE, re.X | re.A)
# Those lines are found by two passes over the whole text ("\n" + text), so that the
# others -- nearly every line of a plain dmesg -- cost nothing in Python: one tried at
# every line start with the prefixes a sign leads (the first word of a message, checked
# on every line, cost twice as much as all the rest), and one that finds where a word-led
# prefix may be by its colon -- "Nov 29 12:00:00 ", "host kernel: ", "kern  :warn  : " --
# whose lines are then tried with the whole of WORK_LINE.
_WORK_SIGN = re.compile(r"\n" + _work_line(HINT_SIGN), re.X | re.A)
_WORD_COLON = re.compile(r":(?:(?<=\ \d\d:)|(?<=kernel:)"
                         r"|emerg|alert|crit|err|warn|notice|info|debug)", re.A)


def _word_lines(scan: str) -> Iterator[int]:
    """Where each line of `scan` that WORK_LINE matches and that holds a word-led prefix's
    colon starts (its "\\n"), in order."""
    rfind, match = scan.rfind, _WORK_LINE.match
    last = -1
    for m in _WORD_COLON.finditer(scan):
        start = rfind("\n", 0, m.start())
        if start != last:
            last = start
            if match(scan, start):
                yield start


def work_lines(scan: str) -> list[int]:
    """Where each line of `scan` ("\\n" + a text) that WORK_LINE matches starts (its
    "\\n"), in order."""
    found = [m.start() for m in _WORK_SIGN.finditer(scan)]
    word = list(_word_lines(scan))
    if word:
        found = sorted({*found, *word})
    return found


def has_word_led(scan: str) -> bool:
    """Whether a line of `scan` ("\\n" + a text) has a word-led prefix that WORK_LINE
    finds ("Nov 29 12:00:00 ", "host kernel: ", "kern  :warn  : "): the one kind of line
    needing normalising that the dmesg scan's own line check (dmesg._SCAN_PLAIN) leaves
    to this pass."""
    return next(_word_lines(scan), None) is not None


def normalize(text: str) -> tuple[str, dict[str, int]]:
    """`text` (no "\\r") with every line's prefixes taken off, and how many lines had
    each prefix form (FORMS order). The same object comes back when nothing changed."""
    scan = "\n" + text
    out, counts = normalize_lines(scan)
    return (text if out is scan else out[1:]), counts


def normalize_lines(scan: str) -> tuple[str, dict[str, int]]:
    """normalize() of "\\n" + a text, as "\\n" + the result (what the dmesg scan reads:
    a 64 MiB log is not copied once more for it); `scan` itself when nothing changed.

    Only the lines work_lines() finds go through _line(); the others are counted in bulk: those
    that start with "[" and were passed over are plain printk times."""
    counts: Counter[str] = Counter()
    pieces: list[str] = []
    last = 0  # where the text not yet in pieces starts, in scan (its "\n" kept)
    bracketed = 0  # lines found that start with "["
    find = scan.find
    for newline in work_lines(scan):
        start = newline + 1
        end = find("\n", start)
        if end < 0:
            end = len(scan)
        line = scan[start:end]
        if line[:1] == "[":
            bracketed += 1
        out = _line(line, counts)
        if out is not line:
            pieces += (scan[last:start], out)
            last = end
    plain_times = scan.count("\n[") - bracketed
    if plain_times:
        counts["printk-time"] += plain_times
    if pieces:
        pieces.append(scan[last:])
        scan = "".join(pieces)
    return scan, {k: counts[k] for k in FORMS if counts[k]}


def normalize_by_line(text: str) -> tuple[str, dict[str, int]]:
    """normalize() line by line: its specification (tests/unit/test_dmesg.py compares)."""
    counts: Counter[str] = Counter()
    lines = text.split("\n")
    out = [_line(line, counts) for line in lines]
    changed = any(a is not b for a, b in zip(out, lines, strict=True))
    return ("\n".join(out) if changed else text), {k: counts[k] for k in FORMS if counts[k]}
