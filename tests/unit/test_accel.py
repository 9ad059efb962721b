import pytest

from vmtest.errors import MissingRequirement
from vmtest.qemu import accel


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _console(clock: FakeClock, script: list[tuple[float, bytes]]):
    """read(timeout) that advances the fake clock and yields scripted output."""
    pending = sorted(script)

    def read(timeout_s: float) -> bytes:
        end = clock.now + timeout_s
        if pending and pending[0][0] <= end:
            at, data = pending.pop(0)
            clock.now = max(clock.now, at)
            return data
        clock.now = end
        return b""
    return read


def test_probe_detects_stall_after_decompressing_within_deadline():
    clock = FakeClock()
    read = _console(clock, [(100.3, b"\r\nDecompressing Linux... Parsing ELF... ")])
    result = accel.watch_boot(read, clock, deadline_s=10)
    assert not result.booted
    assert 10 <= result.elapsed_s < 10.5
    assert "Decompressing Linux" in result.reason


def test_probe_accepts_boot_that_reaches_init():
    clock = FakeClock()
    read = _console(clock, [(100.2, b"Decompressing Linux... done.\r\n"),
                            (101.1, b"VMTEST-INIT\r\n")])
    result = accel.watch_boot(read, clock, deadline_s=10)
    assert result.booted and abs(result.elapsed_s - 1.1) < 0.01


def test_probe_silent_console():
    clock = FakeClock()
    result = accel.watch_boot(_console(clock, []), clock, deadline_s=3)
    assert not result.booted and "no console output" in result.reason


def test_probe_notices_qemu_exit():
    clock = FakeClock()
    result = accel.watch_boot(_console(clock, []), clock, deadline_s=10, exited=lambda: True)
    assert not result.booted and "exited" in result.reason


def test_choose_uses_remembered_verdict(tmp_path):
    store = accel.VerdictStore(tmp_path / "accel.json")
    works = lambda: (True, "opens")  # noqa: E731
    assert accel.choose("auto", store, "h1", works) == accel.AccelChoice(
        "kvm", True, "KVM opens; probing whether it boots a guest")
    store.put("h1", False, "stalled")
    choice = accel.choose("auto", store, "h1", works)
    assert choice.accel == "tcg" and not choice.probe and "stalled" in choice.note
    store.put("h2", True, "booted")
    assert accel.choose("auto", store, "h2", works).accel == "kvm"
    assert not accel.choose("auto", store, "h2", works).probe


def test_choose_without_kvm_and_explicit_requests(tmp_path):
    store = accel.VerdictStore(tmp_path / "accel.json")
    nokvm = lambda: (False, "/dev/kvm does not exist")  # noqa: E731
    assert accel.choose("auto", store, "h", nokvm).accel == "tcg"
    assert accel.choose("tcg", store, "h", nokvm).accel == "tcg"
    # Asked for explicitly, a KVM that cannot work fails loudly (exit 3), with the reason.
    with pytest.raises(MissingRequirement, match="--accel kvm: /dev/kvm does not exist"):
        accel.choose("kvm", store, "h", nokvm)
    works = lambda: (True, "/dev/kvm opens")  # noqa: E731
    assert accel.choose("kvm", store, "h", works) == accel.AccelChoice(
        "kvm", True, "KVM opens; probing whether it boots a guest")
    store.put("h", False, "no init after 10 s under KVM")
    with pytest.raises(MissingRequirement, match="does not boot guests on this host "
                                                 r"\(no init after 10 s"):
        accel.choose("kvm", store, "h", works)
