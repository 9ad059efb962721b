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


def test_a_later_fragment_overrides_an_earlier_one(tmp_path):
    """merge_config.sh keeps the last value; verify checks that one (an architecture's
    fragment turns off what the common one asks for on x86 only)."""
    common = _frag(tmp_path, "common", "CONFIG_PVH=y\nCONFIG_A=y\n")
    arm64 = _frag(tmp_path, "arm64", "# CONFIG_PVH is not set\n")
    assert kconfig.verify([common, arm64], FULL_REQUIRED + "CONFIG_A=y\n") == []
    assert [d.symbol for d in kconfig.verify([arm64, common], FULL_REQUIRED + "CONFIG_A=y\n")] \
        == ["CONFIG_PVH"]


def test_arm64_requires_its_own_console():
    required = kconfig.required("arm64")
    assert required["CONFIG_SERIAL_AMBA_PL011_CONSOLE"] == "y"
    assert "CONFIG_SERIAL_8250_CONSOLE" not in required
    assert kconfig.required() == kconfig.REQUIRED


def test_the_arm64_config_olddefconfig_made_has_all_that_was_asked(data_dir):
    """The .config of `make ARCH=arm64 tinyconfig` + the shipped fragments + arm64's +
    olddefconfig on Debian's 6.1 (recorded): nothing dropped; and x86's check of the
    same file would fail (the check can fail)."""
    frags = [kconfig.load_fragment(n) for n in (*kconfig.DEFAULT_FRAGMENTS, "arm64")]
    text = (data_dir / "kconfig" / "arm64-6.1.config").read_text()
    assert kconfig.verify(frags, text, "arm64") == []
    assert {d.symbol for d in kconfig.verify(frags[:-1], text)} >= {
        "CONFIG_PVH", "CONFIG_SERIAL_8250_CONSOLE"}


def test_a_failed_builds_first_error_is_shown_though_make_went_on(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("  CC      mm/a.o\n"
                   "/t/mm/cma.c:1:2: error: #error vmtest fault injection\n"
                   "    1 | #error vmtest fault injection\n"
                   + "".join(f"  CC      drivers/x{i}.o\n" for i in range(40))
                   + "make: *** [Makefile:250: __sub-make] Error 2\n")
    shown = kconfig.build_errors(log)
    assert shown.splitlines()[0] == "/t/mm/cma.c:1:2: error: #error vmtest fault injection"
    assert shown.splitlines()[-1] == "make: *** [Makefile:250: __sub-make] Error 2"
    assert "drivers/x0.o" not in shown  # the middle is left out
    # no error line (a killed make): the end of the log
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert kconfig.build_errors(log).splitlines()[-1] == "line 49"


def test_an_option_asked_for_where_available_may_be_dropped(tmp_path):
    """"# vmtest: where available" before an option: Kconfig dropping it (6.1 arm64 has no
    uffd-wp markers) is no error; the options around it are checked as before, and a
    later fragment asking for it plainly makes it required again."""
    frag = _frag(tmp_path, "ks", "CONFIG_A=y\n# vmtest: where available\nCONFIG_UFFD=y\n"
                                 "CONFIG_B=y\n")
    assert frag.optional == {"CONFIG_UFFD"}
    assert kconfig.verify([frag], FULL_REQUIRED + "CONFIG_A=y\nCONFIG_B=y\n") == []
    missing_b = kconfig.verify([frag], FULL_REQUIRED + "CONFIG_A=y\n")
    assert [d.symbol for d in missing_b] == ["CONFIG_B"]
    plain = _frag(tmp_path, "arch", "CONFIG_UFFD=y\n")
    assert [d.symbol for d in kconfig.verify([frag, plain],
                                             FULL_REQUIRED + "CONFIG_A=y\nCONFIG_B=y\n")] \
        == ["CONFIG_UFFD"]
