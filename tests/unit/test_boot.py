"""qemu/boot.py on the fake machine: the accelerator choice, KVM's probe and its fallback
to TCG, the verdict remembered per host -- what only real guests covered before."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmtest.channel import GUEST_PATH
from vmtest.errors import InfraError, MissingRequirement
from vmtest.qemu import accel, boot
from vmtest.qemu.fake import FakeMachine


def _no_initramfs(tmp: Path, *_, **__) -> Path:
    path = tmp / "initrd.cpio"
    path.write_bytes(b"")
    return path


@pytest.fixture
def store(tmp_path):
    return accel.VerdictStore(tmp_path / "accel.json")


@pytest.fixture
def kvm_opens(monkeypatch):
    monkeypatch.setattr(accel, "kvm_openable", lambda dev="/dev/kvm": (True, "/dev/kvm opens"))


def _boot(tmp_path, store, factory, accel_name="auto"):
    opts = boot.BootOptions(accel=accel_name, boot_timeout_s=5)
    return boot.boot(Path("/k/vmlinux"), opts, tmp_path / "run", store,
                     machine_class=factory, make_initramfs=_no_initramfs)


def test_tcg_requested_boots_tcg_without_probe(tmp_path, store):
    made = []

    def factory(spec, run_dir, **kw):
        made.append(spec.accel)
        return FakeMachine(spec, run_dir, **kw)

    with _boot(tmp_path, store, factory, "tcg") as vm:
        assert vm.spec.accel == "tcg" and vm.release == "6.1.0-fake"
    assert made == ["tcg"] and store.get(accel.host_fingerprint()) is None


def test_kvm_that_boots_is_kept_and_remembered(tmp_path, store, kvm_opens):
    made = []

    def factory(spec, run_dir, **kw):
        made.append(spec.accel)
        return FakeMachine(spec, run_dir, **kw)

    with _boot(tmp_path, store, factory) as vm:
        assert vm.spec.accel == "kvm"
    assert made == ["kvm"]  # the probe's machine is the one used
    assert store.get(accel.host_fingerprint())["kvm_works"] is True
    # Next time: KVM without a probe.
    assert accel.choose("auto", store) == accel.AccelChoice(
        "kvm", False, "KVM boots guests on this host (remembered)")


@pytest.mark.fault("KVM broken (probe stalls) with --accel auto", verdict="(falls back)",
                   exit="as the run", message="vmtest: WARNING: KVM opens but does not boot "
                                             "guests on this host (...); using TCG",
                   kept="console-kvm-probe.log; the verdict in accel.json")
def test_kvm_that_stalls_falls_back_to_tcg_and_keeps_the_probe_logs(tmp_path, store,
                                                                      kvm_opens):
    made = []

    def factory(spec, run_dir, **kw):
        made.append(spec.accel)
        if spec.accel == "kvm":  # dies before init, as QEMU does on some nested hosts
            return FakeMachine(spec, run_dir, exits=True, console=b"", **kw)
        return FakeMachine(spec, run_dir, **kw)

    with _boot(tmp_path, store, factory) as vm:
        assert vm.spec.accel == "tcg"
    assert made == ["kvm", "tcg"]
    verdict = store.get(accel.host_fingerprint())
    assert verdict["kvm_works"] is False and "exited during the probe" in verdict["reason"]
    assert (tmp_path / "run" / "console-kvm-probe.log").exists()
    assert "does not boot guests" in accel.choose("auto", store).note


def test_qemu_refusing_kvm_is_a_fallback_not_an_error(tmp_path, store, kvm_opens):
    refused = InfraError("QEMU exited with status 1 while starting",
                         log_tail="qemu-system-x86_64: error: failed to set MSR 0x48f\n")
    def pick(spec, run_dir, **kw):
        return FakeMachine(spec, run_dir, launch_error=refused if spec.accel == "kvm" else None,
                           **kw)

    with _boot(tmp_path, store, pick) as vm:
        assert vm.spec.accel == "tcg"
    reason = store.get(accel.host_fingerprint())["reason"]
    assert reason.startswith("QEMU failed to start under KVM: qemu-system-x86_64: error: "
                             "failed to set MSR")


def test_kvm_requested_is_probed_and_kept_when_it_boots(tmp_path, store, kvm_opens):
    with _boot(tmp_path, store, FakeMachine, "kvm") as vm:
        assert vm.spec.accel == "kvm"
    assert store.get(accel.host_fingerprint())["kvm_works"] is True


def test_kvm_requested_that_stalls_fails_loudly_not_as_a_hang(tmp_path, store, kvm_opens):
    made = []

    def stalls(spec, run_dir, **kw):
        made.append(spec.accel)
        return FakeMachine(spec, run_dir, exits=True, console=b"", **kw)

    with pytest.raises(MissingRequirement, match="--accel kvm: KVM does not boot a guest on "
                                                 "this host: QEMU exited during the probe"):
        with _boot(tmp_path, store, stalls, "kvm"):
            pass
    assert made == ["kvm"]  # no silent TCG fallback
    assert MissingRequirement("x").exit_code == 3


def test_stale_boot_folders_of_dead_vmtests_are_swept(tmp_path, monkeypatch):
    """A SIGKILL before READY leaves the boot folder (initramfs with the run's keys):
    the next boot removes it -- only vmtest's own, only of processes that are gone."""
    import os
    import subprocess
    import tempfile

    from vmtest.qemu import boot as boot_mod

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{boot_mod.TMP_PREFIX}{dead.pid}-abc"
    alive = tmp_path / f"{boot_mod.TMP_PREFIX}{os.getpid()}-def"
    other = tmp_path / "vmtest-something-else"
    for folder in (stale, alive, other):
        folder.mkdir()
        (folder / "initrd.cpio").write_bytes(b"keys")
    boot_mod.sweep_stale_tmp()
    assert not stale.exists() and alive.exists() and other.exists()


def test_a_command_on_the_ports_boots_without_keys_or_network(tmp_path, store):
    """`vmtest run -- CMD`: no sshd to start, so no keys; no NIC; the command's ports."""
    from vmtest.channel.ports import Command

    made, given = [], {}

    def factory(spec, run_dir, **kw):
        made.append(kw)
        return FakeMachine(spec, run_dir, **kw)

    def initramfs(tmp, host_key, client_key, *rest, **_):
        given.update(keys=(host_key, client_key), command=rest[-1])
        return _no_initramfs(tmp)

    command = Command.new("uname -r", stdin=True)
    opts = boot.BootOptions(accel="tcg", boot_timeout_s=5, command=command)
    with boot.boot(Path("/k/vmlinux"), opts, tmp_path / "run", store, machine_class=factory,
                   make_initramfs=initramfs) as vm:
        assert vm.command == command
        assert not vm.spec.network and vm.spec.ports == ("stdin", "stdout", "stderr")
    assert given == {"keys": (None, None), "command": command}
    assert made == [{"client_key": None, "host_key": None}]
    # Without a command: keys, a NIC, no ports.
    with _boot(tmp_path, store, FakeMachine, "tcg") as vm:
        assert vm.spec.network and vm.spec.ports == ()


def test_the_run_archive_holds_the_command_and_no_keys(tmp_path, monkeypatch):
    from vmtest.channel import ports
    from vmtest.guest import rootfs
    from vmtest.qemu.argv import Share

    overlays = []
    monkeypatch.setattr(rootfs, "base_image", lambda arch="x86_64": tmp_path / "base.cpio")
    monkeypatch.setattr(rootfs, "assemble",
                        lambda base, overlay, out, layers=(): overlays.append(overlay) or out)
    share = Share(Path("/home/u/work"), 0, required=False)
    command = ports.Command.new("./mytest", workdir_tag=share.tag)
    boot.initramfs(tmp_path, None, None, (), shares=(share,), command=command)
    files = {e.path: e.data for e in overlays[0] if getattr(e, "data", None) is not None}
    assert files[ports.COMMAND_PATH] == f"export PATH={GUEST_PATH}; ./mytest\n".encode()
    assert files[ports.NONCE_PATH] == command.nonce.encode() + b"\n"
    assert not any("dropbear" in path or ".ssh" in path for path in files)
    # The current folder's share, once mounted, is where the command runs.
    script = files[boot.MOUNTS_SCRIPT].decode()
    assert "say MOUNTED vmtest0; workdir=/home/u/work; fi" in script
    assert "workdir" not in boot.mounts_script((share,)).decode()


def test_sshd_is_unpacked_only_by_runs_that_talk_ssh(tmp_path, monkeypatch):
    from vmtest.channel import ports
    from vmtest.channel.keys import KeyPair
    from vmtest.guest import rootfs

    layers: list[list] = []
    monkeypatch.setattr(rootfs, "base_image", lambda arch="x86_64": tmp_path / "base.cpio")
    monkeypatch.setattr(rootfs, "layer_image", lambda program, arch="x86_64": program)
    monkeypatch.setattr(rootfs, "assemble",
                        lambda base, overlay, out, layers_=(), **kw:
                        layers.append(list(kw.get("layers", layers_))) or out)
    boot.initramfs(tmp_path, None, None, ("bash",), command=ports.Command.new("true"))
    boot.initramfs(tmp_path, KeyPair.generate(), KeyPair.generate(), ("bash",))
    assert layers == [["bash"], ["dropbear", "bash"]]
