#!/bin/sh
# vmtest guest init (PID 1). Mounts the pseudo filesystems, brings up the user-mode
# network, starts dropbear with this run's keys and announces readiness on the
# console; then serves a shell on the console as the fallback exec channel.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "VMTEST-$*" > /dev/console; }

# devtmpfs first: without /dev/null the shell's background jobs (dropbear below) fail
# to start.
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
say "INIT"
# dropbear first, when the run has SSH keys (a command on the ports has none): its
# start-up (~0.15 s under TCG, mostly dynamic linking) overlaps the rest of this
# script. It binds 0.0.0.0:22, so it serves eth0 once that has its address below.
# (/root/.ssh 0700 and the keys 0600 come so from the archive.)
# -s: keys only; -j -k: no forwarding; -F: foreground under our control.
sshd=
if [ -f /etc/dropbear/host_key ]; then
    dropbear -F -E -s -j -k -p 22 -r /etc/dropbear/host_key >/var/log/dropbear.log 2>&1 &
    sshd=$!
fi
# Everything of /etc/fstab in one process (proc, sysfs, devpts, tmpfs, debugfs, tracefs);
# /tmp, /run, /var/log and /root come with the archive.
mkdir /dev/pts /dev/shm
mount -a 2>/dev/null
have_net=0
[ -n "$sshd" ] && [ -e /sys/class/net/eth0 ] && have_net=1
# What udev/mdev create and scripts rely on: kselftest's runner appends to /dev/stdout,
# which on a bare devtmpfs would make a regular file that swallows every test's output.
ln -s /proc/self/fd /dev/fd
ln -s fd/0 /dev/stdin; ln -s fd/1 /dev/stdout; ln -s fd/2 /dev/stderr
ip link set lo up
# QEMU user networking: fixed addresses (slirp's defaults), no DHCP round trip. On
# SSHD the host starts connecting (handshake, authentication) and runs nothing
# before READY.
if [ "$have_net" = 1 ] && ip link set eth0 up 2>/dev/null; then
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
    say "SSHD $sshd"
else
    have_net=0
    say "NONET"
fi
echo vmtest > /proc/sys/kernel/hostname
# The run's shares (virtio-9p), mounted while dropbear starts: the host wrote the
# commands (boot.mounts_script); each says MOUNTED TAG or NO9P on the console, and the
# current folder's sets $workdir for the run's command.
[ -f /etc/vmtest/mounts ] && . /etc/vmtest/mounts

# READY only once sshd listens (port 22 = 0016, state 0A = LISTEN in /proc/net/tcp):
# a connection before that is refused and costs the host a retry. Shell builtins
# only, no fork per poll.
listening() {
    while read -r _ local _ state _; do
        case "$local:$state" in *:0016:0A) return 0;; esac
    done < /proc/net/tcp
    return 1
}
if [ "$have_net" = 1 ]; then
    n=0
    while ! listening && [ $n -lt 500 ]; do n=$((n + 1)); done
fi
# The console command loop must not echo input; set before READY so that the host's
# first command cannot race it.
stty -echo 2>/dev/null
read -r release < /proc/sys/kernel/osrelease
say "READY $release"

# The run's command on virtio-serial ports, when the host gave one (channel/ports.py).
# Pipes stand between the command and the ports, as over SSH: a port opens only
# once, so /dev/stdout or /dev/stderr (a reopen through /proc/self/fd) must not be the
# port itself. Its streams end with the run's nonce, stdout's followed by its exit
# status, written through the same open ports (fd 3 and 4) once the relays have passed
# on everything. The environment is SSH's (dropbear's), not PID 1's. (Redirections on a
# function call: a failed open must not end PID 1.)
run_on_ports() {  # $1: the stdin port, or /dev/null
    read -r nonce < /etc/vmtest/nonce
    rm -f /etc/vmtest/nonce
    # In the current folder's share if mounted, else /root; 125: vmtest's own failure.
    status=125
    if cd "${workdir:-/root}" 2>&4 && mkfifo /run/vmtest-out /run/vmtest-err; then
        cat /run/vmtest-out >&3 3>&- 4>&- &
        relay_out=$!
        cat /run/vmtest-err >&4 3>&- 4>&- &
        relay_err=$!
        # stdin through an anonymous pipe (a fifo reopened as /dev/stdin once its writer
        # has gone would block), its relay started in the background so that the
        # pipeline waits for the command only.
        rm -f /run/vmtest-in.pid
        { [ "$1" = /dev/null ] || { cat "$1" 3>&- 4>&- & echo $! >/run/vmtest-in.pid; }; } |
            env -i PATH="$PATH" HOME=/root USER=root LOGNAME=root SHELL=/bin/sh \
                sh /etc/vmtest/command >/run/vmtest-out 2>/run/vmtest-err 3>&- 4>&-
        status=$?
        # The relays end with the command's output, unless something it left running
        # in the background holds it open: then after a second, as SSH would not wait.
        (sleep 1; kill "$relay_out" "$relay_err") 2>/dev/null &
        watchdog=$!
        wait "$relay_out" "$relay_err"
        kill "$watchdog" 2>/dev/null
        # stdin the command left unread: its relay waits on the port for nothing now
        read -r relay_in 2>/dev/null </run/vmtest-in.pid && kill "$relay_in" 2>/dev/null
        rm -f /run/vmtest-out /run/vmtest-err /run/vmtest-in.pid
    fi
    printf '%s %d\n' "$nonce" "$status" >&3
    printf '%s\n' "$nonce" >&4
    cd /
}
# The ports by name. Their names come with a control message the driver handles in a
# work queue (under KVM QEMU answers from its own thread): a port without its name yet
# is waited for, briefly; no ports at all is a kernel without the driver.
find_ports() {
    in=/dev/null out= err=
    for port in /sys/class/virtio-ports/*; do
        [ -r "$port/name" ] || continue
        read -r name < "$port/name"
        case $name in
            vmtest.stdin) in=/dev/${port##*/};;
            vmtest.stdout) out=/dev/${port##*/};;
            vmtest.stderr) err=/dev/${port##*/};;
        esac
    done
    [ -n "$out" ] && [ -n "$err" ]
}
if [ -f /etc/vmtest/command ]; then
    n=0
    until find_ports || [ ! -d /sys/class/virtio-ports ] || [ $n -ge 40 ]; do
        sleep 0.05; n=$((n + 1))
    done
    if [ -z "$out" ] || [ -z "$err" ] || ! run_on_ports "$in" 3>"$out" 4>"$err"; then
        say "NOPORTS"
    fi
fi

# Fallback exec channel: a non-interactive command loop on the console (no prompt,
# no line editing, no echo). The host writes one command line and reads up to the
# marker line carrying its exit status.
while true; do
    setsid sh -c 'exec </dev/console >/dev/console 2>&1
        while IFS= read -r line; do eval "$line"; done'
done
