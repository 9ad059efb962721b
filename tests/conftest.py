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
