"""`vmtest doctor` on what arm64 guests need: optional checks, one apt-get line."""


from vmtest import doctor
from vmtest.qemu import boot


def test_what_is_missing_is_named_with_one_apt_get_line(monkeypatch, tmp_path):
    present = {"dpkg-deb": "/usr/bin/dpkg-deb",
               "qemu-system-aarch64": "/usr/bin/qemu-system-aarch64"}
    monkeypatch.setattr(doctor.shutil, "which", present.get)
    monkeypatch.setattr(doctor, "Path", lambda p: tmp_path / p.lstrip("/"))
    monkeypatch.setattr(boot, "EDK2_AARCH64", tmp_path / "QEMU_EFI.fd")
    checks = {c.name: c for c in doctor.arm64_checks()}
    assert all(c.optional for c in checks.values())
    assert checks["qemu-system-aarch64"].ok and checks["dpkg-deb"].ok
    missing = [c for c in checks.values() if not c.ok]
    assert [c.name for c in missing] == ["aarch64-linux-gnu-gcc", "arm64 static libc",
                                         "arm64 UEFI firmware"]
    assert {c.fix for c in missing} == {"apt-get install --no-install-recommends "
                                        "gcc-aarch64-linux-gnu libc6-dev-arm64-cross "
                                        "qemu-efi-aarch64"}


def test_all_present_is_all_ok(monkeypatch, tmp_path):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: f"/usr/bin/{name}")
    (tmp_path / "usr/aarch64-linux-gnu/lib").mkdir(parents=True)
    (tmp_path / "usr/aarch64-linux-gnu/lib/libc.a").write_bytes(b"")
    (tmp_path / "QEMU_EFI.fd").write_bytes(b"")
    monkeypatch.setattr(doctor, "Path", lambda p: tmp_path / p.lstrip("/"))
    monkeypatch.setattr(boot, "EDK2_AARCH64", tmp_path / "QEMU_EFI.fd")
    assert all(c.ok for c in doctor.arm64_checks())
