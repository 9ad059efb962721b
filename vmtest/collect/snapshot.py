"""Guest state snapshots: /proc/vmstat, /proc/meminfo, CMA sysfs and debugfs.

One shell script gathers everything in a single SSH round trip; its output is a list
of "### SECTION" blocks parsed here (pure).
"""

from __future__ import annotations

from typing import Any

from vmtest.guest import memory

SNAPSHOT_SCRIPT = r"""
echo '### vmstat'; cat /proc/vmstat
echo '### meminfo'; cat /proc/meminfo
for d in {cma_sysfs}/*/; do
  [ -d "$d" ] || continue
  echo "### cma-sysfs $(basename "$d")"
  for f in "$d"*; do echo "$(basename "$f") $(cat "$f" 2>/dev/null)"; done
done
for d in {cma_debugfs}/*/; do
  [ -d "$d" ] || continue
  echo "### cma-debugfs $(basename "$d")"
  for f in count used maxchunk order_per_bit base_pfn; do
    [ -f "$d$f" ] && echo "$f $(cat "$d$f")"
  done
done
echo '### end'
""".replace("{cma_sysfs}", memory.CMA_SYSFS).replace("{cma_debugfs}", memory.CMA_DEBUGFS)

# /proc/vmstat counters that matter for migration work (mm/vmstat.c names).
VMSTAT_KEYS = (
    "pgmigrate_success", "pgmigrate_fail", "compact_migrate_scanned", "compact_free_scanned",
    "compact_isolated", "compact_stall", "compact_fail", "compact_success",
    "cma_alloc_success", "cma_alloc_fail", "thp_migration_success", "thp_migration_fail",
    "thp_migration_split", "pgfault", "pgfree", "pgactivate", "pgdeactivate", "pglazyfree",
    "pgrotated", "unevictable_pgs_mlocked", "unevictable_pgs_munlocked",
)


def parse_snapshot(text: str) -> dict[str, Any]:
    result: dict[str, Any] = {"vmstat": {}, "meminfo_kib": {}, "cma_sysfs": {},
                              "cma_debugfs": {}}
    section: list[str] = []
    for line in text.splitlines():
        if line.startswith("### "):
            section = line[4:].split()
            continue
        if not section or not line.strip():
            continue
        name = section[0]
        if name == "vmstat":
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                result["vmstat"][key] = int(value)
        elif name == "meminfo":
            key, _, rest = line.partition(":")
            words = rest.split()
            if words and words[0].isdigit():
                result["meminfo_kib"][key.strip()] = int(words[0])
        elif name in ("cma-sysfs", "cma-debugfs") and len(section) > 1:
            key, _, value = line.partition(" ")
            bucket = result["cma_sysfs" if name == "cma-sysfs" else "cma_debugfs"]
            area = bucket.setdefault(section[1], {})
            value = value.strip()
            area[key] = int(value) if value.lstrip("-").isdigit() else value
    return result


def vmstat_delta(before: dict[str, Any], after: dict[str, Any],
                 keys: tuple[str, ...] = VMSTAT_KEYS) -> dict[str, int]:
    b, a = before.get("vmstat", {}), after.get("vmstat", {})
    return {k: a[k] - b.get(k, 0) for k in keys if k in a}


# Per-step snapshots: a few counters printed as one line around every step of a
# scenario (each CMA allocation, each block offlined), by the guest's own shell so a
# step costs no extra SSH round trip.
STEP_VMSTAT = ("pgmigrate_success", "pgmigrate_fail", "compact_isolated",
               "cma_alloc_success", "cma_alloc_fail")
STEP_MEMINFO = ("MemFree", "CmaFree")


def step_snapshot_command(label: str) -> str:
    """A guest shell command printing 'vmtest-step LABEL key=value ...' on one line."""
    vm_keys = "|".join(STEP_VMSTAT)
    mi_keys = "|".join(STEP_MEMINFO)
    return ("echo \"vmtest-step " + label + " $(awk '/^(" + vm_keys + ") /"
            "{printf \"%s=%s \", $1, $2}' /proc/vmstat)"
            "$(awk '/^(" + mi_keys + "):/{sub(\":\", \"\", $1); "
            "printf \"%s_kib=%s \", $1, $2}' /proc/meminfo)\"")


def parse_step_lines(text: str) -> dict[str, dict[str, int]]:
    """{label: {key: value}} from the 'vmtest-step' lines in text."""
    steps: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        if not line.startswith("vmtest-step "):
            continue
        words = line.split()
        if len(words) < 2:
            continue
        values = {}
        for word in words[2:]:
            key, _, value = word.partition("=")
            if value.lstrip("-").isdigit():
                values[key] = int(value)
        steps[words[1]] = values
    return steps


def step_delta(pre: dict[str, int], post: dict[str, int]) -> dict[str, int]:
    """post - pre for the vmstat counters; levels (meminfo) are reported as before/after."""
    delta = {k: post[k] - pre[k] for k in STEP_VMSTAT if k in pre and k in post}
    for key in STEP_MEMINFO:
        k = f"{key}_kib"
        if k in pre:
            delta[f"{k}_before"] = pre[k]
        if k in post:
            delta[f"{k}_after"] = post[k]
    return delta
