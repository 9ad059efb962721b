"""paths.publishing: the one way a folder enters the cache (kernels, selftests, sources)."""

from __future__ import annotations

import pytest

from vmtest import paths


def test_a_finished_folder_replaces_the_old_one_at_once(tmp_path):
    final = tmp_path / "k"
    (final / "old").mkdir(parents=True)
    with paths.publishing(final) as staging:
        assert staging.is_dir() and staging.parent == tmp_path and staging != final
        (staging / "image").write_text("new")
        assert not (final / "image").exists()  # nothing visible before the end
    assert sorted(p.name for p in final.iterdir()) == ["image"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]  # no staging left


def test_a_failure_leaves_the_cache_as_it_was(tmp_path):
    final = tmp_path / "k"
    final.mkdir()
    (final / "image").write_text("old")
    with pytest.raises(RuntimeError), paths.publishing(final) as staging:
        (staging / "image").write_text("half")
        raise RuntimeError("make failed")
    assert (final / "image").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_two_publishers_of_the_same_folder_do_not_collide(tmp_path):
    final = tmp_path / "k"
    with paths.publishing(final) as first, paths.publishing(final) as second:
        assert first != second  # a staging folder of one's own
        (first / "a").write_text("1")
        (second / "a").write_text("1")
    assert (final / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]
