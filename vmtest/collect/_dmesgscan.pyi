# The compiled line scan (_dmesgscan.c); dmesg.py documents what it returns.
from collections.abc import Callable
from typing import Any

def scan(
    text: str, dump_factory: Callable[..., Any], fields: Callable[[str], dict[str, Any]]
) -> tuple[
    list[dict[str, Any]],  # summaries
    list[dict[str, Any]],  # migrate_fails
    list[Any],  # dumps, as dump_factory made them
    list[dict[str, int]],  # hotplug migrate failures
    list[int],  # hotplug isolate failures
    list[tuple[str, str | None]],  # CMA lines, with their timestamp text
    list[str],  # offlining lines
    list[tuple[int, str, str | None]],  # splat lines: end offset, line, timestamp text
]: ...
