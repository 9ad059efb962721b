from pathlib import Path

import pytest

from vmtest.errors import ConfigError
from vmtest.kernel import kconfig


def _frag(tmp_path: Path, name: str, text: str) -> kconfig.Fragment:
    path = tmp_path / f"{name}.config"
    path.write_text(text)
    return kconfig.load_fragment(path)


FULL_REQUIRED = "".join(f"{k}={v}\n" for k, v in kconfig.REQUIRED.items())


def test_parse_config_handles_set_unset_and_comments():
    parsed = kconfig.parse_config("# a comment\nCONFIG_A=y\n# CONFIG_B is not set\n"
                                  "CONFIG_C=\"str\"\nCONFIG_D=0x10\nnoise\n")
    assert parsed == {"CONFIG_A": "y", "CONFIG_B": None, "CONFIG_C": '"str"', "CONFIG_D": "0x10"}


def test_verify_reports_dropped_option_with_fragment_name(tmp_path):
    frag = _frag(tmp_path, "mm", "CONFIG_CMA_SYSFS=y\nCONFIG_FOO=y\n")
    final = FULL_REQUIRED + "CONFIG_FOO=y\n"
    final = final.replace("CONFIG_CMA_SYSFS=y\n", "# CONFIG_CMA_SYSFS is not set\n")
    dropped = kconfig.verify([frag], final)
    names = {(d.fragment, d.symbol) for d in dropped}
    assert ("mm", "CONFIG_CMA_SYSFS") in names
    assert ("required by vmtest", "CONFIG_CMA_SYSFS") in names
    assert "mm: CONFIG_CMA_SYSFS=y (got CONFIG_CMA_SYSFS is not set)" in [str(d) for d in dropped]


def test_verify_accepts_complete_config(tmp_path):
    frag = _frag(tmp_path, "f", "CONFIG_X=m\n# CONFIG_Y is not set\nCONFIG_Z=\"a b\"\n")
    assert kconfig.verify([frag], FULL_REQUIRED + "CONFIG_X=m\nCONFIG_Z=\"a b\"\n") == []


def test_verify_flags_option_that_should_be_off(tmp_path):
    frag = _frag(tmp_path, "f", "# CONFIG_Y is not set\n")
    dropped = kconfig.verify([frag], FULL_REQUIRED + "CONFIG_Y=y\n")
    assert [d.symbol for d in dropped] == ["CONFIG_Y"]


def test_required_options_checked_without_fragments():
    dropped = kconfig.verify([], "CONFIG_CMA=y\n")
    assert {d.symbol for d in dropped} == set(kconfig.REQUIRED) - {"CONFIG_CMA"}


def test_shipped_fragments_cover_required_options():
    frags = [kconfig.load_fragment(n) for n in kconfig.DEFAULT_FRAGMENTS]
    asked = {sym for f in frags for sym, _ in f.options}
    assert set(kconfig.REQUIRED) <= asked


def test_unknown_fragment_lists_available():
    with pytest.raises(ConfigError, match="not found") as exc:
        kconfig.load_fragment("no-such-fragment")
    assert "mm-migration" in (exc.value.hint or "")
