#!/bin/busybox sh
# /init of the test VM's initramfs (run by busybox sh as PID 1).
#
# Loads the kernel modules listed in /etc/vm-modules (in dependency order), mounts the
# host's root file system (9p tag "hostroot", read-only) on /newroot, the run's I/O
# directory (9p tag "vmio") on /io, gives /newroot fresh proc/sys/dev/cgroup2 and tmpfs
# on /tmp /run /var/tmp, enables every cgroup v2 controller in the root's
# subtree_control, mounts the read-write shares listed in /io/shares, then runs
# /io/run.sh in /newroot (after switch_root) with an empty environment. Its stdout+stderr go to
# /io/output, its exit status to /io/status; then the VM powers off.
# Messages for the person debugging go to the console (ttyS0) prefixed with "vm-init:".

/bin/busybox --install -s /bin
export PATH=/bin

say() { echo "vm-init: $*"; }
die() {
    say "FATAL: $*"
    [ -d /io ] && echo "vm-init: FATAL: $*" >> /io/init-error 2>/dev/null
    poweroff -f
    reboot -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

release=$(uname -r)
while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "/lib/modules/$release/$ko" || say "insmod $ko failed"
done < /etc/vm-modules

ninep=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /io /newroot
mount -t 9p -o "$ninep" vmio /io || die "cannot mount the 9p export vmio on /io"
mount -t 9p -o "$ninep,ro,cache=loose" hostroot /newroot || die "cannot mount the 9p export hostroot on /newroot"
cat /proc/uptime > /io/uptime-start

r=/newroot
mount -t proc proc $r/proc || die "cannot mount proc on $r/proc"
mount -t sysfs sysfs $r/sys || die "cannot mount sysfs on $r/sys"
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $r/sys/fs/cgroup ||
    die "cannot mount cgroup2 on $r/sys/fs/cgroup"
mount -t devtmpfs devtmpfs $r/dev || die "cannot mount devtmpfs on $r/dev"
mkdir -p $r/dev/pts $r/dev/shm $r/dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts $r/dev/pts
ln -sf pts/ptmx $r/dev/ptmx 2>/dev/null
mount -t tmpfs -o mode=1777 shm $r/dev/shm
mount -t mqueue mqueue $r/dev/mqueue 2>/dev/null
for d in /tmp /var/tmp; do
    mount -t tmpfs -o mode=1777 tmpfs $r$d || die "cannot mount tmpfs on $r$d"
done
mount -t tmpfs -o mode=0755 tmpfs $r/run || die "cannot mount tmpfs on $r/run"
# The guest kernel's modules (those in this initramfs) at /lib/modules/RELEASE, so
# modprobe inside the chroot finds them; the host's modules are of no use here.
if [ -d $r/usr/lib/modules ]; then
    mount -t tmpfs -o mode=0755 tmpfs $r/usr/lib/modules &&
        mkdir -p $r/usr/lib/modules/$release &&
        mount -o bind /lib/modules/$release $r/usr/lib/modules/$release
fi

cg=$r/sys/fs/cgroup
for c in $(cat $cg/cgroup.controllers); do
    echo "+$c" > $cg/cgroup.subtree_control || say "cannot enable cgroup controller $c"
done

hostname agent-vm
ip link set lo up

if [ -f /io/shares ]; then
    while read -r tag path; do
        [ -n "$tag" ] || continue
        mkdir -p "$r$path" || die "cannot create mount point $path for share $tag"
        mount -t 9p -o "$ninep,cache=mmap" "$tag" "$r$path" ||
            die "cannot mount the read-write share $path (9p tag $tag)"
    done < /io/shares
fi

# Switch to the host root for real (switch_root: move it onto /, chroot, free the
# initramfs), as a booted system is: a plain chroot would leave the initramfs as the mount
# namespace's root, and pivot_root inside the tests would then not behave as on a host.
vm=$r/run/vm
mkdir -p $vm/io || die "cannot create $vm"
cp /bin/busybox $vm/busybox || die "cannot copy busybox to $vm"
mount --move /io $vm/io || die "cannot move /io to $vm/io"
cat > $vm/runner <<'RUNNER'
B=/run/vm/busybox
IO=/run/vm/io
echo "vm-init: running the script" > /dev/console
$B env -i /bin/sh -c "$($B cat $IO/run.sh)" < /dev/null > $IO/output 2>&1
status=$?
$B cat /proc/uptime > $IO/uptime-end
echo "vm-init: script exited with status $status" > /dev/console
$B dmesg > $IO/dmesg 2>/dev/null
echo "$status" > $IO/status
$B sync
$B umount $IO
$B poweroff -f
$B reboot -f
RUNNER
if [ -f $vm/io/systemd ]; then
    # systemd as PID 1 (the host root's own systemd 252), booting only into a target that
    # runs the script as a service: the host's other services are never started. What
    # systemd and the tests write goes to tmpfs (the root stays the host's, read-only).
    for d in /var/log /var/lib /usr/local/bin; do
        [ -d $r$d ] || continue
        mount -t tmpfs -o mode=0755 tmpfs $r$d || die "cannot mount tmpfs on $r$d"
    done
    # /etc writable too (units, /etc/default, what `install` puts there): a copy in tmpfs.
    mkdir -p $vm/etc && cp -a $r/etc/. $vm/etc/ && mount --bind $vm/etc $r/etc ||
        die "cannot make a writable copy of /etc"
    mkdir -p $r/run/systemd/system
    cat > $r/run/systemd/system/as-vm-test.target <<'UNIT'
[Unit]
Description=agent-supervisor VM test
Requires=basic.target as-vm-test.service
After=basic.target as-vm-test.service
AllowIsolate=yes
UNIT
    cat > $r/run/systemd/system/as-vm-test.service <<'UNIT'
[Unit]
Description=agent-supervisor VM test script
After=basic.target systemd-journald.service
[Service]
Type=oneshot
TimeoutStartSec=infinity
StandardOutput=journal+console
ExecStart=/run/vm/busybox sh /run/vm/runner
# A script that was killed powers the VM off too (the harness then says it left no status).
ExecStopPost=/run/vm/busybox poweroff -f
UNIT
    say "booting systemd"
    exec switch_root $r /lib/systemd/systemd --unit=as-vm-test.target --log-target=console --show-status=false
    die "switch_root to systemd failed"
fi
exec switch_root $r /run/vm/busybox sh /run/vm/runner
die "switch_root failed"
