"""One way to name a kernel (vmtest/kernel_choice.py): every command and the pytest
plugin read the same options by the same rule."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from vmtest import cli, kernel_choice, paths
from vmtest.cli.common import kernel_choice_of
from vmtest.errors import ConfigError
from vmtest.kernel_choice import KernelChoice


def _choice(*argv: str) -> KernelChoice:
    parser, _ = cli.build_parser(list(argv))
    args, _ = parser.parse_known_args(list(argv))
    return kernel_choice_of(args)


def test_no_options_name_the_reference_experiments_first_kernel_and_variant():
    spec = KernelChoice().spec()
    assert (spec.base, spec.variant) == ("6.1", "patched")  # the kernel as shipped
    assert kernel_choice.default_build_spec() == spec


def test_run_scenario_picks_its_kernel_by_the_rule_of_run_cmd():
    # The bar of issue 24: `run --scenario S` (which used to require --variant) and
    # `run -- CMD` and `run --kselftest` name the same kernel from the same options.
    for options in ([], ["--variant", "unpatched"],
                    ["--config", str(paths.default_config()), "--base", "6.1"]):
        command = _choice("run", *options, "--", "true").spec()
        scenario = _choice("run", *options, "--scenario", "cma-stress").spec()
        selftest = _choice("run", *options, "--kselftest", "mm").spec()
        assert command == scenario == selftest
    assert _choice("run", "--variant", "unpatched", "--scenario", "x").spec().variant \
        == "unpatched"


def test_ad_hoc_options_build_the_source_named():
    spec = _choice("run", "--source", "debian:6.12", "--", "true").spec()
    assert (spec.base, spec.variant) == ("debian:6.12", "default")
    assert _choice("run", "--fragment", "qemu-guest", "--", "true").spec().base \
        == "debian:6.1"


def test_build_builds_every_variant_unless_narrowed():
    assert [s.variant for s in _choice("build").specs(every=True)] == ["patched", "unpatched"]
    assert [s.variant for s in _choice("build", "--variant", "unpatched").specs()] \
        == ["unpatched"]


@pytest.mark.parametrize("argv,problem", [
    (["--kernel", "/x/bzImage", "--source", "debian:6.1"], "names an image"),
    (["--source", "debian:6.1", "--config", "c.yaml"], "do not go with ad-hoc"),
])
def test_contradicting_options_are_refused(argv, problem):
    with pytest.raises(ConfigError, match=problem):
        _choice("run", *argv, "--", "true").spec()


def test_a_missing_image_or_patch_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        _choice("run", "--kernel", str(tmp_path / "nope"), "--", "true").image_path()
    with pytest.raises(ConfigError, match="patch .* not found"):
        _choice("run", "--patch", str(tmp_path / "x.patch"), "--", "true").spec()


def test_the_plugin_offers_the_same_options_with_its_prefix():
    seen: dict[str, dict] = {}

    class Group:
        def addoption(self, flag: str, **kwargs: object) -> None:
            seen[flag] = kwargs

    kernel_choice.add_pytest_options(Group())
    parser = argparse.ArgumentParser()
    kernel_choice.add_arguments(parser, (*kernel_choice.KERNEL, "accel"))
    flags = {a.option_strings[0] for a in parser._actions if a.option_strings
             and a.option_strings[0] != "-h"}
    assert {f.replace("--vmtest-", "--") for f in seen} == flags
    for flag, kwargs in seen.items():  # the same help, the plugin's own dest
        action = next(a for a in parser._actions
                      if a.option_strings[:1] == [flag.replace("--vmtest-", "--")])
        assert kwargs["help"] == action.help and str(kwargs["dest"]).startswith("vmtest_")
    assert seen["--vmtest-variant"]["action"] == "append"  # a test per variant


def test_the_plugin_reads_its_options_by_the_same_rule():
    values = {"vmtest_variant": ["unpatched", "patched"], "vmtest_config": None}
    choice = KernelChoice.from_options(lambda name: values.get(f"vmtest_{name}"))
    assert choice.variant == "unpatched" and choice.spec().variant == "unpatched"
    assert Path(choice.config_path) == paths.default_config()
