from pathlib import Path

import pytest

from vmtest import config
from vmtest.errors import ConfigError
from vmtest.kernel.source import DebianSource

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    script = tmp_path / "x.sh"  # what DATA_SCENARIO runs
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
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
    ("kernels:\n  k: {variants: {'a b': {}}}\n", "must be ASCII letters"),
    # A kernel's name becomes part of run directories' names: none that leaves them.
    ("kernels:\n  '../../x': {}\n", "kernel name '../../x' must be ASCII letters"),
    ("kernels:\n  'a/b': {}\n", "kernel name 'a/b' must be ASCII letters"),
    ("kernels:\n  .hidden: {}\n", "kernel name '.hidden' must be ASCII letters"),
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


# -- the experiment schema of issue 26: errors say FILE:LINE: key.path --------------------
EXAMPLE = REPO / "examples" / "experiments" / "compaction" / "compaction.yaml"

DATA_SCENARIO = """\
kernels:
  k: {source: debian:6.1}
scenarios:
  s:
    run: ./x.sh
    metrics:
      - {name: ms, from: stdout, pattern: 'ms=([0-9.]+)'}
"""


def _error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert exc.value.exit_code == 2
    return exc.value.render()


@pytest.mark.parametrize("text,line,message", [
    # unknown keys at every level, with the allowed ones
    ("kernels:\n  k:\n    source: debian:6.1\n    variant: {}\n", 4,
     "kernels.k.variant: unknown key"),
    ("kernels:\n  k:\n    variants:\n      v:\n        sysctls: {vm.x: 1}\n", 5,
     "kernels.k.variants.v.sysctls: unknown key"),
    ("kernels:\n  k:\n    variants:\n      v:\n        machine: {mem: 2G}\n", 5,
     "kernels.k.variants.v.machine.mem: unknown key"),
    (DATA_SCENARIO + "    timeout: 5\n", 8, "scenarios.s.timeout: unknown key"),
    (DATA_SCENARIO + "      - {name: c, from: vmstat, counter: pgfault, pattern: x}\n", 8,
     "scenarios.s.metrics[1].pattern: unknown key"),
    (DATA_SCENARIO + "    load: {lru_stress: {opps: all}}\n", 8,
     "scenarios.s.load.lru_stress.opps: unknown key"),
    (DATA_SCENARIO + "matrix: {variants: [a, b], scenarios: [s], reps: 2}\n", 8,
     "matrix.reps: unknown key"),
    # an unknown metric source
    (DATA_SCENARIO + "      - {name: c, from: vmstats, counter: pgfault}\n", 8,
     "scenarios.s.metrics[1].from: unknown metric source 'vmstats' (did you mean vmstat?)"),
    # a bad pattern, a pattern with the wrong number of groups
    (DATA_SCENARIO.replace("'ms=([0-9.]+)'", "'ms=([0-9.]+'"), 7,
     "scenarios.s.metrics[0].pattern: bad pattern 'ms=([0-9.]+': missing )"),
    (DATA_SCENARIO.replace("'ms=([0-9.]+)'", "'(ms)=([0-9.]+)'"), 7,
     "pattern '(ms)=([0-9.]+)' has 2 groups; it needs 1"),
    # a vmstat counter or meminfo field that is a typo of a real one
    (DATA_SCENARIO + "      - {name: c, from: vmstat, counter: compact_stal}\n", 8,
     "scenarios.s.metrics[1].counter: unknown vmstat counter 'compact_stal' (did you mean "
     "compact_stall?)"),
    (DATA_SCENARIO + "      - {name: c, from: meminfo, field: Memfree}\n", 8,
     "unknown meminfo field 'Memfree' (did you mean MemFree?)"),
    (DATA_SCENARIO + "      - {name: c, from: tracefs, event: mm_compaction_begin}\n", 8,
     "trace event 'mm_compaction_begin' is not SUBSYSTEM/NAME"),
    (DATA_SCENARIO + "      - {name: c, from: tracefs, begin: a/b}\n", 8,
     "needs event: (a count) or begin: and end:"),
    (DATA_SCENARIO + "      - {name: c, from: file, path: /etc/passwd}\n", 8,
     "path '/etc/passwd' must be an absolute path under /proc or /sys"),
    (DATA_SCENARIO + "      - {name: c, from: file, path: /sys/../etc/passwd}\n", 8,
     "must be an absolute path under /proc or /sys"),
    (DATA_SCENARIO + "      - {name: c, from: dmesg, pattern: x, splats: any}\n", 8,
     "from: dmesg needs exactly one of pattern, splats, dump_reason, summary"),
    (DATA_SCENARIO + "      - {name: ms, from: exit}\n", 8, "metric ms is defined twice"),
    (DATA_SCENARIO + "      - {name: c, from: exit, better: down}\n", 8,
     "scenarios.s.metrics[1].better: unknown direction 'down'"),
    # metric names of built-in scenarios: a typo is an error, not "insufficient data"
    ("kernels:\n  k: {}\nscenarios:\n  cma-stress:\n    metrics: [fail_to_migrate_dump]\n", 5,
     "scenarios.cma-stress.metrics[0]: scenario cma-stress produces no metric "
     "'fail_to_migrate_dump' (did you mean fail_to_migrate_dumps?)"),
    ("kernels:\n  k: {}\nscenarios:\n  cma-stress:\n    metrics: [failed_pages]\n"
     "    lower_is_better: \"false\"\n", 6,
     "scenarios.cma-stress.lower_is_better: expected a boolean (true/false), got string "
     "'false'"),
    ("kernels:\n  k: {}\nscenarios:\n  cma-stress:\n    metrics: [failed_pages]\n"
     "    params: {count: true}\n", 6, "parameter count must be int, got bool True"),
    ("kernels:\n  k: {}\nscenarios:\n  frag: {metrics: [x]}\n", 4,
     "scenarios.frag: unknown scenario 'frag': not built in, and no run: defines it"),
    ("kernels:\n  k: {}\nscenarios:\n  cma-stress: {run: x}\n", 4,
     "cma-stress is a built-in scenario"),
    # strict types: no bool as int, no string as bool
    (DATA_SCENARIO + "    timeout_s: true\n", 8,
     "scenarios.s.timeout_s: expected a number, got boolean True"),
    (DATA_SCENARIO + "matrix: {variants: [a, b], scenarios: [s], repetitions: true}\n", 8,
     "matrix.variants[0]: kernel 'k' has no variant 'a'"),
    ("kernels:\n  k: {variants: {a: {}, b: {}}}\nmatrix: {variants: [a, b], scenarios: [], "
     "repetitions: 2.5}\n", 3, "matrix.repetitions: expected an integer, got number 2.5"),
    # names: ASCII, as the docs say
    ("kernels:\n  k:\n    variants:\n      café: {}\n", 4, "variant name 'café' must be ASCII"),
    ("kernels:\n  6.1: {}\n", 2, "key 6.1 is a float in YAML, not a name"),
    ("kernels:\n  k: {}\n  k: {}\n", 3, "k: duplicate key (first at line 2)"),
    # variants: kernel parameters, sysctls, machine
    ("kernels:\n  k:\n    variants:\n      v: {cmdline: 'a=1 b=\"x y\"'}\n", 4,
     "kernel parameter 'b=\"x' is not name[=value]"),
    ("kernels:\n  k:\n    variants:\n      v: {cmdline: 'foo;reboot'}\n", 4,
     "kernel parameter 'foo;reboot' is not name[=value]"),
    ("kernels:\n  k:\n    variants:\n      v: {cmdline: [init=/bin/sh]}\n", 4,
     "kernel parameter init is set by vmtest itself"),
    ("kernels:\n  k:\n    variants:\n      v: {cmdline: 'cma=64M'}\n", 4,
     "kernel parameter cma is set by vmtest itself"),
    ("kernels:\n  k:\n    variants:\n      v:\n        sysctl: {vm.swappiness: off}\n", 5,
     "kernels.k.variants.v.sysctl.vm.swappiness: expected a number or a string, got boolean "
     "False"),
    ("kernels:\n  k:\n    variants:\n      v:\n        sysctl: {vm.x: '1; reboot'}\n", 5,
     "sysctl value '1; reboot' must be words"),
    ("kernels:\n  k:\n    variants:\n      v:\n        sysctl: {'vm/../x': 1}\n", 5,
     "sysctl name 'vm/../x' is not dotted"),
    ("kernels:\n  k:\n    variants:\n      v:\n        machine: {memory: 1G, cma: 1G}\n", 5,
     "cma (1024 MiB) must be smaller than memory (1024 MiB)"),
    ("kernels:\n  k:\n    variants:\n      v:\n        machine: {cpus: '2'}\n", 5,
     "machine.cpus: expected an integer, got string '2'"),
    ("kernels:\n  k:\n    variants:\n      v:\n        machine: {memory: 2X}\n", 5,
     "bad size '2X'"),
])
def test_schema_errors_say_file_line_and_key(tmp_path, text, line, message):
    rendered = _error(tmp_path, text)
    assert f"{tmp_path / 'exp.yaml'}:{line}:" in rendered
    assert message in rendered


def test_a_value_cut_at_a_comma_in_a_flow_mapping_says_so(tmp_path):
    # What issue 26's author from the docs wrote first: YAML reads the text after the
    # comma as a key of its own, with no value.
    rendered = _error(tmp_path, DATA_SCENARIO + "      - {name: c, from: exit,\n"
                      "         description: the held buffer, read after the command}\n")
    assert f"{tmp_path / 'exp.yaml'}:9: scenarios.s.metrics[1].read after the command: " \
           "unknown key (the rest of a value cut at a comma?)" in rendered
    assert 'quote a value that has one (description: "a, b"); allowed here: ' \
           "better, description, from, name" in rendered
    # a plain unknown key keeps the plain message
    assert "(the rest of" not in _error(tmp_path, DATA_SCENARIO + "    timeout: 5\n")


def test_unknown_key_lists_the_allowed_ones(tmp_path):
    rendered = _error(tmp_path, DATA_SCENARIO + "    timeout: 5\n")
    assert "fix: allowed here: description, env, load, machine, metrics, run, setup, " \
           "timeout_s" in rendered


def test_a_counter_unlike_any_known_one_is_left_to_the_guest(tmp_path):
    """A name no recorded kernel prints but not close to one may exist in the guest's
    kernel: the run says (metrics.MetricUnavailable) if it does not."""
    path = _write(tmp_path, DATA_SCENARIO
                  + "      - {name: c, from: vmstat, counter: nr_brand_new_thing}\n")
    sc = config.load(path).scenario("s")
    assert sc.custom is not None and sc.custom.metrics[1].counter == "nr_brand_new_thing"


def test_variant_resolution_cmdline_sysctl_machine_and_patches(tmp_path):
    path = _write(tmp_path, """
kernels:
  k:
    source: debian:6.1
    patches: [6.1/vmtest-instrumentation.patch]
    variants:
      base: {}
      tuned.v2:
        sysctl: {vm.compaction_proactiveness: 20, vm.lowmem_reserve_ratio: "256 256 32 0"}
        cmdline: transparent_hugepage=never lru_gen
        machine: {memory: 2G, cpus: 4, cma: 0, slots: 2, maxmem: 4G}
      reverted:
        patches: [6.1/revert-d479960e44f2-lru-cache-disable.patch]
        cmdline: [transparent_hugepage=always]
        sysctl: {vm.swappiness: 10}
""")
    k = config.load(path).kernel("k")
    base, tuned, reverted = k.variant("base"), k.variant("tuned.v2"), k.variant("reverted")
    assert tuned.cmdline == ("transparent_hugepage=never", "lru_gen")
    assert tuned.sysctl == (("vm.compaction_proactiveness", "20"),
                            ("vm.lowmem_reserve_ratio", "256 256 32 0"))
    assert tuned.boot_overrides() == {"memory_mib": 2048, "cpus": 4,
                                      "cma_mib": 0, "slots": 2, "maxmem_mib": 4096,
                                      "cmdline_extra": ("transparent_hugepage=never", "lru_gen")}
    assert base.boot_overrides() == {} and base.sysctl == () and base.cmdline == ()
    # patches, cmdline and sysctl combine
    assert [p.name for p in reverted.series] == [
        "vmtest-instrumentation.patch", "revert-d479960e44f2-lru-cache-disable.patch"]
    assert reverted.cmdline == ("transparent_hugepage=always",)
    assert reverted.sysctl == (("vm.swappiness", "10"),)
    # one build serves variants that differ only in how they boot: the same key
    from vmtest.kernel.build import cache_key

    keys = {v.name: cache_key(k.build_spec(v), "source-id", "gcc") for v in k.variants}
    assert keys["base"] == keys["tuned.v2"] != keys["reverted"]
    assert k.build_spec(tuned).variant == "tuned.v2"  # the document still names it


def test_the_issue_example_loads_as_written():
    exp = config.load(EXAMPLE)
    k = exp.kernel("6.1")
    assert [v.name for v in k.variants] == ["proactive-off", "proactive-on", "thp-never"]
    assert k.variant("proactive-on").sysctl == (("vm.compaction_proactiveness", "20"),)
    assert k.variant("thp-never").cmdline == ("transparent_hugepage=never",)
    sc = exp.scenario("frag")
    assert sc.metrics[:3] == ("alloc_ms", "compact_stall", "migrate_dumps")
    assert sc.lower_is_better_for("alloc_ms") and not sc.lower_is_better_for("hugepages")
    assert sc.custom is not None and sc.custom.timeout_s == 300
    scenario = sc.make("seed", seed=2)
    assert scenario.name == "frag" and scenario.params.seed == 2
    assert scenario.boot_overrides()["memory_mib"] == 2048
    assert scenario.boot_overrides()["copies"] == ((EXAMPLE.parent.resolve(),
                                                   "/root/experiment"),)
    assert exp.matrix is not None and exp.matrix.variants == ("proactive-off", "proactive-on")
    with pytest.raises(ConfigError, match="no parameter 'count'"):
        sc.make("seed", count=3)


def test_builtin_metrics_may_say_which_way_is_better(tmp_path):
    path = _write(tmp_path, "kernels:\n  k: {}\nscenarios:\n  hotplug-offline:\n"
                            "    metrics: [drains_per_offline, {name: blocks_offlined, "
                            "better: higher}]\n")
    sc = config.load(path).scenario("hotplug-offline")
    assert sc.metrics == ("drains_per_offline", "blocks_offlined")
    assert sc.lower_is_better_for("drains_per_offline")
    assert not sc.lower_is_better_for("blocks_offlined")


def test_every_shipped_config_loads():
    for path in [*(REPO / "configs").glob("*.yaml"),
                 *(REPO / "examples").rglob("*.yaml")]:
        config.load(path)


def test_yaml_anchors_and_merge_keys_may_override(tmp_path):
    path = _write(tmp_path, """
kernels:
  k:
    variants:
      base: &tuned {sysctl: {vm.swappiness: 10}, cmdline: lru_gen}
      more:
        <<: *tuned
        sysctl: {vm.swappiness: 60}
""")
    k = config.load(path).kernel("k")
    assert k.variant("more").sysctl == (("vm.swappiness", "60"),)
    assert k.variant("more").cmdline == ("lru_gen",)
    assert "duplicate key" in _error(tmp_path, "kernels:\n  k:\n    variants:\n"
                                               "      a: &x {description: d}\n"
                                               "      b:\n        <<: *x\n"
                                               "        drop: []\n        drop: []\n")


def test_a_script_of_the_folder_must_be_there_and_executable(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(DATA_SCENARIO.replace("./x.sh", "./y.sh --fast"))

    def error() -> str:
        with pytest.raises(ConfigError) as exc:
            config.load(path)
        return exc.value.render()

    assert f"{path}:5: scenarios.s.run: ./y.sh is not a file in" in error()
    (tmp_path / "y.sh").write_text("#!/bin/sh\n")
    assert f"{path}:5: scenarios.s.run: ./y.sh is not executable" in error()
    (tmp_path / "y.sh").chmod(0o755)
    assert config.load(path).scenario("s").custom.run == "./y.sh --fast"
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


def test_numa_nodes_need_a_numa_kernel(tmp_path):
    body = ("kernels:\n  k:\n    source: debian:6.1\n{frag}    variants:\n"
            "      two: {{machine: {{numa: 2}}}}\n")
    with pytest.raises(ConfigError, match="CONFIG_NUMA") as exc:
        config.load(_write(tmp_path, body.format(frag="")))
    assert "add the fragment numa" in (exc.value.hint or "")
    exp = config.load(_write(tmp_path, body.format(
        frag="    fragments: [qemu-guest, mm-migration, mm-selftests, numa]\n")))
    assert exp.kernel("k").variant("two").boot_overrides()["numa_nodes"] == 2
