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
# Everything of /etc/fstab in one process (proc, sysfs, devpts, tmpfs, debugfs, tracefs);
# /tmp, /run, /var/log and /root come with the archive.
mkdir /dev/pts /dev/shm
mount -a 2>/dev/null
# dropbear first: its start-up (dynamic linking, keys) overlaps the rest of this
# script. It binds 0.0.0.0:22, so it serves eth0 once that has its address below.
# (/root/.ssh 0700 and the keys 0600 come so from the archive.)
# -s: keys only; -j -k: no forwarding; -F: foreground under our control.
have_net=0
if [ -e /sys/class/net/eth0 ]; then
    have_net=1
    dropbear -F -E -s -j -k -p 22 -r /etc/dropbear/host_key >/var/log/dropbear.log 2>&1 &
    sshd=$!
fi
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
# commands (boot.mounts_script); each says MOUNTED TAG or NO9P on the console.
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

# Fallback exec channel: a non-interactive command loop on the console (no prompt,
# no line editing, no echo). The host writes one command line and reads up to the
# marker line carrying its exit status.
while true; do
    setsid sh -c 'exec </dev/console >/dev/console 2>&1
        while IFS= read -r line; do eval "$line"; done'
done
