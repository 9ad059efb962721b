"""The layering of docs/architecture.md, checked on the code: a module imports only from
its own stage or the stages below it (type-only imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "vmtest"

# Lowest first. A module belongs to the entry with the longest prefix of its name
# (a prefix is a whole module or package name; the package itself only as itself).
STAGES = [
    ("foundation", ("vmtest.__init__", "vmtest.errors", "vmtest.paths", "vmtest.deadline",
                    "vmtest.procs", "vmtest.hostcmd", "vmtest.outcome", "vmtest.untar",
                    "vmtest.provenance", "vmtest.yamlsrc", "vmtest.arch")),
    ("kernel", ("vmtest.kernel",)),
    ("guest", ("vmtest.guest",)),
    ("channel", ("vmtest.channel",)),
    ("qemu", ("vmtest.qemu",)),
    ("collect", ("vmtest.collect",)),
    ("scenarios", ("vmtest.scenarios",)),
    ("config", ("vmtest.config", "vmtest.kernel_choice")),
    ("results", ("vmtest.results",)),
    ("run", ("vmtest.run",)),
    ("matrix", ("vmtest.matrix",)),
    ("compare", ("vmtest.compare", "vmtest.sequential")),
    ("report", ("vmtest.report",)),
    ("tools", ("vmtest.bisect", "vmtest.doctor")),
    ("cli", ("vmtest.cli", "vmtest.pytest_plugin")),
]


def stage_of(module: str) -> int:
    if module == "vmtest":
        module = "vmtest.__init__"
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
    # no catch-all: a module of no named stage is found
    with pytest.raises(AssertionError, match="belongs to no stage"):
        stage_of("vmtest.newmodule")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of a module graph (its strongly connected components of more
    than one module, or a module importing itself), by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_even_through_imports_inside_functions():
    graph = {module_name(p): imports(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_architecture_doc_names_every_stage_package():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for path in sorted(PACKAGE.iterdir()):
        if path.name.startswith(("_", ".")) or path.suffix not in ("", ".py"):
            continue
        name = path.name if path.is_dir() else path.stem
        assert f"{name}" in doc, f"docs/architecture.md does not mention {name}"


def test_architecture_docs_stage_table_matches_the_code():
    """Every module in the doc's stage table is in the stage the doc says (the same stage
    the checker above uses), and every module of the package is in the table."""
    import re

    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    names = {name for name, _ in STAGES}
    listed: dict[str, str] = {}
    for row in re.findall(r"^\| (\w+) \| (.+?) \| ", doc, flags=re.M):
        stage, cells = row
        if stage not in names:
            continue
        for file in re.findall(r"`([\w/]+)\.py`", cells):
            listed["vmtest." + file.replace("/", ".")] = stage
    wrong = {m: (s, STAGES[stage_of(m)][0]) for m, s in listed.items()
             if STAGES[stage_of(m)][0] != s}
    assert wrong == {}, "doc stage vs code stage"
    # every module, packages' __init__ and __main__ aside (the package's own included)
    modules = {"vmtest.__init__"} | {
        module_name(p) for p in PACKAGE.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")}
    assert sorted(modules - set(listed)) == [], "modules missing from the doc's table"
