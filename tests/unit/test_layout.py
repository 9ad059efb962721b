"""The layering of docs/architecture.md, checked on the code: a module imports only from
its own stage or the stages below it (type-only imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "vmtest"

# Lowest first. A module belongs to the first entry that is a prefix of its name.
STAGES = [
    ("foundation", ("vmtest", "vmtest.errors", "vmtest.paths", "vmtest.deadline", "vmtest.procs",
                    "vmtest.arch")),
    ("kernel", ("vmtest.kernel",)),
    ("guest", ("vmtest.guest",)),
    ("channel", ("vmtest.channel",)),
    ("qemu", ("vmtest.qemu",)),
    ("collect", ("vmtest.collect",)),
    ("scenarios", ("vmtest.scenarios",)),
    ("config", ("vmtest.config",)),
    ("results", ("vmtest.results",)),
    ("run", ("vmtest.run",)),
    ("matrix", ("vmtest.matrix",)),
    ("compare", ("vmtest.compare", "vmtest.sequential")),
    ("report", ("vmtest.report",)),
    ("tools", ("vmtest.bisect", "vmtest.doctor")),
    ("cli", ("vmtest.cli", "vmtest.pytest_plugin")),
]


def stage_of(module: str) -> int:
    best = -1, -1
    for rank, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), rank))
    assert best[1] >= 0, f"{module} belongs to no stage of STAGES"
    return best[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from vmtest import run` imports the module vmtest.run
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")).exists()
                      or (PACKAGE.parent / (f"{node.module}.{a.name}".replace(".", "/")
                                            + ".py")).exists()}
    return {m for m in found if m == "vmtest" or m.startswith("vmtest.")}


def test_no_module_imports_from_a_higher_stage():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        for target in imports(path):
            if stage_of(target) > stage_of(here):
                upward.append(f"{here} ({STAGES[stage_of(here)][0]}) imports {target} "
                              f"({STAGES[stage_of(target)][0]})")
    assert upward == []


def test_the_stage_table_covers_every_module_and_the_checker_can_fail():
    for path in PACKAGE.rglob("*.py"):
        stage_of(module_name(path))
    assert stage_of("vmtest.cli.run") > stage_of("vmtest.run") > stage_of("vmtest.qemu.boot")
    assert "vmtest.run" in imports(PACKAGE / "matrix.py")


def test_architecture_doc_names_every_stage_package():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for path in sorted(PACKAGE.iterdir()):
        if path.name.startswith(("_", ".")) or path.suffix not in ("", ".py"):
            continue
        name = path.name if path.is_dir() else path.stem
        assert f"{name}" in doc, f"docs/architecture.md does not mention {name}"
