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

# The run's command on virtio-serial ports, when the host gave one (channel/ports.py):
# its streams end with the run's nonce, stdout's followed by its exit status, written
# through the same open ports (fd 3 and 4) so that they come after everything the
# command wrote. (Redirections on a function call: a failed open must not end PID 1.)
run_on_ports() {
    read -r nonce < /etc/vmtest/nonce
    rm -f /etc/vmtest/nonce
    # In the current folder's share if mounted, else /root; 124: vmtest's own failure.
    status=124
    if cd "${workdir:-/root}" 2>&4; then
        HOME=/root USER=root LOGNAME=root SHELL=/bin/sh sh /etc/vmtest/command \
            <"$1" >&3 2>&4 3>&- 4>&-
        status=$?
    fi
    printf '%s %d\n' "$nonce" "$status" >&3
    printf '%s\n' "$nonce" >&4
    cd /
}
if [ -f /etc/vmtest/command ]; then
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
