import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def update_golden() -> bool:
    """VMTEST_UPDATE_GOLDEN=1 rewrites golden files instead of comparing."""
    return os.environ.get("VMTEST_UPDATE_GOLDEN") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fault(name, verdict, exit, message, kept): a fault this test injects "
                   "and what vmtest must do about it (docs/reliability.md is made of these)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """VMTEST_FAULT_TABLE=FILE: write every fault-marked test's row (JSON lines)."""
    out = os.environ.get("VMTEST_FAULT_TABLE")
    if not out:
        return
    import json

    with open(out, "w") as handle:
        for item in items:
            mark = item.get_closest_marker("fault")
            if mark is not None:
                handle.write(json.dumps({"test": item.nodeid, "fault": mark.args[0],
                                         **mark.kwargs}) + "\n")
