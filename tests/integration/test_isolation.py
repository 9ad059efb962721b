"""What a guest can reach on the host (issue 28): a listener on the host's loopback is out
of reach of every guest that has a network (`vmtest run --ssh`, and the SSH guests of
scenarios and the pytest plugin, which boot the same way), while SSH into it still works;
a writable share cannot plant setuid files or device nodes on the host; QEMU runs under
its seccomp sandbox with the death signal set."""

from __future__ import annotations

import io
import os
import socket
import stat
import subprocess
import sys
import threading

import pytest

from vmtest.qemu.boot import boot, sandbox_supported

BANNER = b"HTTP/1.0 200 OK host-loopback-listener\r\n\r\n"


class Listener:
    """A TCP server on the host's 127.0.0.1 that answers every connection with BANNER
    and counts them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.sendall(BANNER)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener():
    server = Listener()
    # The listener works: the host itself gets the banner.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        assert conn.recv(100) == BANNER
    yield server
    server.close()


def _reach(port: int) -> str:
    """A guest command that connects to the host's loopback as slirp maps it (10.0.2.2,
    where the issue's web server answered) and prints what came back."""
    return f"echo trying; timeout 10 busybox nc 10.0.2.2 {port} </dev/null; echo status $?"


@pytest.mark.fault("a guest connects to a service on the host's loopback (10.0.2.2)",
                   verdict="refused by QEMU (slirp restrict=on)", exit="0 (the guest's "
                   "command runs on)", message="(none: the connection times out in the guest)",
                   kept="SSH into the guest through its one forward on 127.0.0.1")
def test_ssh_guest_cannot_reach_the_hosts_loopback(kernel, tmp_path, listener):
    proc = subprocess.run([sys.executable, "-m", "vmtest.cli", "run", "--ssh", "--no-share",
                           "--kernel", str(kernel.directory), "--output", str(tmp_path / "run"),
                           "--", _reach(listener.port) + "; echo ssh-works"],
                          capture_output=True, timeout=300)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert "trying" in out and "ssh-works" in out, out
    assert "host-loopback-listener" not in out
    assert listener.accepted == 1  # the fixture's own check, no guest's


def _run(vm, command: str) -> str:
    out = io.BytesIO()
    vm.ssh().run(command, stdout=out, stderr=io.BytesIO(), timeout_s=60)
    return out.getvalue().decode(errors="replace")


def test_guests_booted_for_scenarios_and_the_plugin_cannot_either(kernel, boot_opts, run_dir,
                                                                  listener):
    """boot() and SSH, as run_scenario and the plugin's `vm` fixture use them."""
    with boot(kernel.image, boot_opts, run_dir) as vm:
        assert "restrict=on" in vm.argv[vm.argv.index("-netdev") + 1].split(",")
        assert ("-sandbox" in vm.argv) == sandbox_supported()
        out = _run(vm, _reach(listener.port))
        assert "trying" in out and "host-loopback-listener" not in out, out
        assert _run(vm, "echo ssh-works").strip() == "ssh-works"
    assert listener.accepted == 1


@pytest.mark.fault("--share-rw: the guest (root) makes a setuid file and device nodes in "
                   "the shared host folder", verdict="kept off the host (9p mapped-xattr)",
                   exit="0", message="(none: in the guest they look made)",
                   kept="on the host: plain files 0644 owned by vmtest's user; the "
                        "guest's mode and device numbers only in user.virtfs.* attributes")
def test_writable_share_cannot_plant_setuid_files_or_devices(kernel, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    command = (f"cd {out} && cp /bin/busybox suid && chmod 4755 suid && "
               f"mknod null c 1 3 && mknod sda b 8 0 && mkfifo fifo && "
               f"ls -l suid null sda fifo && echo made")
    proc = subprocess.run([sys.executable, "-m", "vmtest.cli", "run", "--no-share",
                           "--share-rw", str(out), "--kernel", str(kernel.directory),
                           "--output", str(tmp_path / "run"), "--", command],
                          capture_output=True, timeout=300)
    text = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace") + text
    assert "made" in text
    for name in ("suid", "null", "sda", "fifo"):
        st = os.lstat(out / name)
        assert stat.S_ISREG(st.st_mode), f"{name}: {stat.filemode(st.st_mode)} on the host"
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), name
        assert st.st_uid == os.getuid()


def test_a_pytest_plugin_guest_cannot_either(kernel, tmp_path, listener):
    """The plugin's `vm`, as a user's test gets it."""
    (tmp_path / "test_reach.py").write_text(
        "def test_reach(vm):\n"
        f"    out = vm.run({_reach(listener.port)!r}).stdout\n"
        "    assert 'trying' in out and 'host-loopback-listener' not in out, out\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "test_reach.py", "--vmtest-kernel", str(kernel.directory)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert listener.accepted == 1
