"""Collectors and parsers: dmesg, vmstat, tracefs, CMA sysfs/debugfs."""
