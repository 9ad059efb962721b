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
    kernel_choice.add_arguments(parser, (*kernel_choice.KERNEL, *kernel_choice.MACHINE))
    flags = {a.option_strings[0] for a in parser._actions if a.option_strings
             and a.option_strings[0] != "-h"}
    assert {f.replace("--vmtest-", "--") for f in seen} == flags
    for flag, kwargs in seen.items():  # the same help, the plugin's own dest
        action = next(a for a in parser._actions
                      if a.option_strings[:1] == [flag.replace("--vmtest-", "--")])
        assert kwargs["help"] == action.help and str(kwargs["dest"]).startswith("vmtest_")
        assert kwargs.get("type") is action.type
        if flag != "--vmtest-variant":  # the plugin's repeats (a test per variant)
            assert kwargs["default"] == action.default
    assert seen["--vmtest-variant"]["action"] == "append"  # a test per variant


def test_the_plugin_reads_its_options_by_the_same_rule():
    values = {"vmtest_variant": ["unpatched", "patched"], "vmtest_config": None}
    choice = KernelChoice.from_options(lambda name: values.get(f"vmtest_{name}"))
    assert choice.variant == "unpatched" and choice.spec().variant == "unpatched"
    assert Path(choice.config_path) == paths.default_config()


# -- NUMA nodes: `vmtest run --numa N` and the plugin's --vmtest-numa N -----------------
def _plugin_parser() -> argparse.ArgumentParser:
    """The plugin's options on an argparse parser, as pytest's parser adds them."""
    parser = argparse.ArgumentParser(prog="pytest")

    class Group:
        def addoption(self, flag: str, **kwargs: object) -> None:
            parser.add_argument(flag, **kwargs)

    kernel_choice.add_pytest_options(Group())
    return parser


def test_numa_nodes_parse_alike_in_both_front_ends():
    run_parser, _ = cli.build_parser(["run", "--", "true"])
    plugin = _plugin_parser()
    for text, nodes in (("0", 0), ("2", 2), ("8", 8)):
        assert run_parser.parse_args(["run", "--numa", text, "--", "true"]).numa == nodes
        assert plugin.parse_args(["--vmtest-numa", text]).vmtest_numa == nodes
    assert run_parser.parse_args(["run", "--", "true"]).numa == 0  # none by default
    assert plugin.parse_args([]).vmtest_numa == 0


@pytest.mark.parametrize("text", ["9", "-1", "two", "1.5", ""])
def test_a_number_of_numa_nodes_out_of_range_is_a_usage_error(text, capsys):
    run_parser, _ = cli.build_parser(["run", "--", "true"])
    for parser, argv, flag in ((run_parser, ["run", "--numa", text, "--", "true"], "--numa"),
                               (_plugin_parser(), ["--vmtest-numa", text], "--vmtest-numa")):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2
        assert (f"argument {flag}: {text!r} is not a number of NUMA nodes from 0 to 8"
                in capsys.readouterr().err)


def _image_dir(tmp_path: Path, config: str | None) -> Path:
    """A `vmtest build` directory: an image and, when given, its config."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "vmlinux").write_bytes(b"")
    if config is not None:
        (tmp_path / "config").write_text(config)
    return tmp_path


def test_numa_nodes_of_a_kernel_without_config_numa_are_refused(tmp_path):
    image = _image_dir(tmp_path, "CONFIG_MMU=y\n# CONFIG_NUMA is not set\n") / "vmlinux"
    with pytest.raises(ConfigError) as exc:
        kernel_choice.check_numa(2, image)
    assert str(exc.value).startswith("--numa 2: the kernel ")
    assert "built without CONFIG_NUMA" in str(exc.value) and "\n" not in str(exc.value)
    assert exc.value.hint is not None and "--fragment numa" in exc.value.hint
    with pytest.raises(ConfigError) as exc:  # the plugin's spelling
        kernel_choice.check_numa(4, image, spelling=lambda flag: f"--vmtest-{flag}")
    assert str(exc.value).startswith("--vmtest-numa 4: ")
    assert exc.value.hint is not None and "--vmtest-fragment numa" in exc.value.hint
    for nodes in (0, 1):  # no NUMA machine: nothing asked of the kernel
        kernel_choice.check_numa(nodes, image)


def test_numa_nodes_of_a_kernel_with_config_numa_or_an_unknown_config_pass(tmp_path):
    kernel_choice.check_numa(2, _image_dir(tmp_path / "numa", "CONFIG_NUMA=y\n") / "vmlinux")
    # no config beside it: not checked before boot (the plugin counts the guest's nodes)
    kernel_choice.check_numa(2, _image_dir(tmp_path / "bare", None) / "vmlinux")


def test_the_config_beside_an_image_is_found_where_builds_leave_it(tmp_path):
    from vmtest.kernel.images import config_of

    vmtest_build = _image_dir(tmp_path / "cache", "CONFIG_NUMA=y\n")
    assert config_of(vmtest_build / "vmlinux") == vmtest_build / "config"
    out = tmp_path / "out"  # make O=out: vmlinux beside .config
    out.mkdir()
    (out / ".config").write_text("CONFIG_NUMA=y\n")
    assert config_of(out / "vmlinux") == out / ".config"
    boot_dir = out / "arch" / "x86" / "boot"  # bzImage three folders below .config
    boot_dir.mkdir(parents=True)
    assert config_of(boot_dir / "bzImage") == out / ".config"
    assert config_of(tmp_path / "elsewhere" / "vmlinux") is None


def test_vmtest_run_refuses_numa_nodes_of_a_kernel_without_them_before_booting(
        tmp_path, monkeypatch, capsys):
    def no_boot(*args, **kwargs):
        raise AssertionError("booted")

    monkeypatch.setattr("vmtest.qemu.boot.boot", no_boot)
    build = _image_dir(tmp_path / "build", "# CONFIG_NUMA is not set\n")
    status = cli.main(["run", "--kernel", str(build), "--numa", "2", "--no-share", "--",
                       "true"])
    assert status == 125  # vmtest did not run CMD (errors.EXIT_CMD_VMTEST)
    err = capsys.readouterr().err
    assert "--numa 2: the kernel" in err and "built without CONFIG_NUMA" in err


# -- --virtio-mem SIZE -------------------------------------------------------------------
def test_a_virtio_mem_size_parses_alike_in_both_front_ends(capsys):
    run_parser, _ = cli.build_parser(["run", "--", "true"])
    plugin = _plugin_parser()
    for text, mib in (("1G", 1024), ("256M", 256), ("512", 512), ("0", 0)):
        assert run_parser.parse_args(["run", "--virtio-mem", text, "--",
                                      "true"]).virtio_mem == mib
        assert plugin.parse_args(["--vmtest-virtio-mem", text]).vmtest_virtio_mem == mib
    assert plugin.parse_args([]).vmtest_virtio_mem == 0  # no device by default
    for text in ("3M", "lots"):
        with pytest.raises(SystemExit) as exc:
            plugin.parse_args(["--vmtest-virtio-mem", text])
        assert exc.value.code == 2
        assert "argument --vmtest-virtio-mem: " in capsys.readouterr().err


def test_a_virtio_mem_device_on_a_kernel_without_the_driver_is_refused(tmp_path):
    image = _image_dir(tmp_path / "no", "# CONFIG_VIRTIO_MEM is not set\n") / "vmlinux"
    with pytest.raises(ConfigError) as exc:
        kernel_choice.check_virtio_mem(1024, image, spelling=lambda f: f"--vmtest-{f}")
    message = str(exc.value)
    assert message.startswith("--vmtest-virtio-mem 1024M: the kernel ") and "\n" not in message
    assert message.endswith("built without CONFIG_VIRTIO_MEM (add the fragment virtio-mem)")
    assert "--vmtest-fragment virtio-mem" in (exc.value.hint or "")
    kernel_choice.check_virtio_mem(0, image)  # no device: nothing asked of the kernel
    kernel_choice.check_virtio_mem(
        256, _image_dir(tmp_path / "yes", "CONFIG_VIRTIO_MEM=y\n") / "vmlinux")
    kernel_choice.check_virtio_mem(256, _image_dir(tmp_path / "bare", None) / "vmlinux")


@pytest.mark.fault("vmtest run --virtio-mem 1G on a kernel built without CONFIG_VIRTIO_MEM "
                   "(x86_64's default fragments)", verdict="refused before the boot",
                   exit="125 (vmtest did not run CMD)",
                   message="--virtio-mem 1024M: the kernel DIR is built without "
                           "CONFIG_VIRTIO_MEM (add the fragment virtio-mem)", kept="nothing")
def test_vmtest_run_refuses_a_virtio_mem_device_before_booting(tmp_path, monkeypatch, capsys):
    def no_boot(*args, **kwargs):
        raise AssertionError("booted")

    monkeypatch.setattr("vmtest.qemu.boot.boot", no_boot)
    build = _image_dir(tmp_path / "build", "CONFIG_MMU=y\n")
    status = cli.main(["run", "--kernel", str(build), "--virtio-mem", "1G", "--no-share",
                       "--", "true"])
    assert status == 125
    assert "--virtio-mem 1024M: the kernel" in capsys.readouterr().err
