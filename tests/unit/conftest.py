import pytest


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast tests write nothing into the user's cache (a bug report of a test that
    raises on purpose, a bisection's log): each test gets a cache of its own."""
    monkeypatch.setenv("VMTEST_CACHE", str(tmp_path_factory.mktemp("cache")))
