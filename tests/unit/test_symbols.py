"""Naming vCPU program counters from `nm -n` output (hang reports)."""

from vmtest.qemu import symbols

NM = """\
ffffffff81000000 T _stext
ffffffff81001000 t native_safe_halt
ffffffff81001010 T default_idle
ffffffff81002000 D some_data
ffffffff81003000 W weak_fn
"""

INFO_REGISTERS = """\
CPU#0
RAX=0000000000000000 RBX=ffffffff82a0a940 RCX=0000000000000001 RDX=0000000000000000
RIP=ffffffff8100100b RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
CPU#1
RIP=ffffffff81003004 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
"""


def test_text_symbols_only_sorted():
    table = symbols.parse_nm(NM)
    assert [n for _, n in table] == ["_stext", "native_safe_halt", "default_idle", "weak_fn"]


def test_rips_named_by_nearest_symbol_below():
    table = symbols.parse_nm(NM)
    pcs = symbols.parse_rips(INFO_REGISTERS)
    assert pcs == [0xffffffff8100100b, 0xffffffff81003004]
    assert [symbols.name(pc, table) for pc in pcs] == ["native_safe_halt+0xb", "weak_fn+0x4"]


def test_addresses_outside_the_text_stay_hex():
    table = symbols.parse_nm(NM)
    assert symbols.name(0x1000, table) == "0x1000"
    assert symbols.name(0x1234, []) == "0x1234"


def test_arm64_pcs_named_from_the_system_map(data_dir, tmp_path):
    """HMP `info registers -a` of a real arm64 guest (QEMU 7.2, 2 vCPUs: one in the
    virtio-pci notify of the QMP-driven virtio-mem resize, one idle) and the lines of its
    Image's System.map around those PCs; load() reads a System.map beside an Image."""
    text = (data_dir / "symbols" / "arm64-info-registers.txt").read_text()
    pcs = symbols.parse_rips(text)
    assert pcs == [0xffffffc00823e04c, 0xffffffc008384ce8]
    image = tmp_path / "Image"
    image.write_bytes(b"MZ\0\0" + bytes(52) + b"ARM\x64")
    (tmp_path / "System.map").write_text(
        (data_dir / "symbols" / "arm64-System.map.excerpt").read_text())
    table = symbols.load(image)
    assert [symbols.name(pc, table) for pc in pcs] == ["vp_notify+0x0", "cpu_do_idle+0x8"]


def test_no_system_map_means_hex(tmp_path):
    image = tmp_path / "Image"
    image.write_bytes(b"MZ")
    assert symbols.load(image) == []
