from pathlib import Path

import pytest

from vmtest import config
from vmtest.errors import ConfigError
from vmtest.kernel.source import DebianSource

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_reference_config_defines_patched_and_unpatched():
    exp = config.load(REPO / "configs" / "lru-migration.yaml")
    k61 = exp.kernel("6.1")
    assert k61.source == DebianSource("6.1")
    patched, unpatched = k61.variant("patched"), k61.variant("unpatched")
    assert [p.name for p in patched.series] == ["vmtest-instrumentation.patch"]
    assert [p.name for p in unpatched.series] == [
        "vmtest-instrumentation.patch", "revert-d479960e44f2-lru-cache-disable.patch"]
    spec = k61.build_spec(unpatched)
    assert spec.variant == "unpatched" and spec.base == "6.1" and len(spec.fragments) == 3


def test_drop_removes_from_base_series(tmp_path):
    path = _write(tmp_path, """
kernels:
  k:
    source: debian:6.1
    patches: [6.1/vmtest-instrumentation.patch]
    variants:
      bare: {drop: [6.1/vmtest-instrumentation.patch]}
      full: {}
""")
    k = config.load(path).kernel("k")
    assert k.variant("bare").series == ()
    assert len(k.variant("full").series) == 1


@pytest.mark.parametrize("text,message", [
    ("kernels: [\n", "broken YAML at line"),
    ("- a\n- b\n", "expected a mapping"),
    ("kernels: {}\n", "no kernels defined"),
    ("kernels:\n  k: {source: debian:5.4}\n", "kernels.k.source: unknown Debian kernel source"),
    ("kernels:\n  k: {sauce: debian:6.1}\n", "kernels.k.sauce: unknown key"),
    ("kernels:\n  k: {patches: [nope.patch]}\n",
     "kernels.k.patches[0]: patch 'nope.patch' not found"),
    ("kernels:\n  k: {fragments: [nope]}\n", "kernels.k.fragments[0]"),
    ("kernels:\n  k: {variants: {v: {drop: [6.1/vmtest-instrumentation.patch]}}}\n",
     "not in the base series"),
    ("kernels:\n  k: {variants: {'a b': {}}}\n", "must be letters"),
    # A kernel's name becomes part of run directories' names: none that leaves them.
    ("kernels:\n  '../../x': {}\n", "kernel name '../../x' must be letters"),
    ("kernels:\n  'a/b': {}\n", "kernel name 'a/b' must be letters"),
    ("kernels:\n  .hidden: {}\n", "kernel name '.hidden' must be letters"),
    ("bogus: 1\nkernels:\n  k: {}\n", "bogus: unknown key"),
])
def test_errors_name_file_and_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert message in str(exc.value)
    assert str(path) in str(exc.value)


def test_unknown_kernel_and_variant_list_available():
    exp = config.load(REPO / "configs" / "lru-migration.yaml")
    with pytest.raises(ConfigError) as exc:
        exp.kernel("5.10")
    assert "6.1" in (exc.value.hint or "")
    with pytest.raises(ConfigError) as exc:
        exp.kernel("6.1").variant("nope")
    assert "patched, unpatched" in (exc.value.hint or "")


def test_a_kernel_may_be_for_arm64(tmp_path):
    exp = config.load(_write(tmp_path, """
kernels:
  a: {source: debian:6.1, arch: aarch64}
  x: {source: debian:6.1}
"""))
    assert exp.kernel("a").build_spec(exp.kernel("a").variants[0]).arch == "arm64"
    assert exp.kernel("x").build_spec(exp.kernel("x").variants[0]).arch == "x86_64"
    with pytest.raises(ConfigError, match=r"kernels\.k\.arch.*unknown architecture 'mips'"):
        config.load(_write(tmp_path, "kernels:\n  k: {arch: mips}\n"))
