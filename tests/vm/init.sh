#!/bin/busybox sh
# PID 1 of the test VM, in two stages.
#   boot  (from the initramfs): mount the host's root read-only over 9p under a tmpfs
#         overlay and switch to it.
#   guest (in that root): mount what the tests need, run the job's steps, power off.
# The host reads only the console: each step's output is framed by marker lines that carry
# its exit status, because qemu's own exit status says nothing about the guest.

VM=/run/udptrace-vm # this script, busybox and the job, copied where switch_root keeps them

marker() { echo "UDPTRACE-VM $*"; }

boot() {
    /bin/busybox --install -s /bin
    mkdir -p /proc /sys /dev /lower /upper /newroot
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    modprobe -a virtio_pci 9pnet_virtio 9p overlay
    # cache=loose: the guest keeps what it read (importing numpy twice: 7-10 s -> 4.6 s);
    # the tree under test does not change while the VM runs
    mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /lower
    mount -t tmpfs tmpfs /upper
    mkdir /upper/data /upper/work
    mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work \
        /newroot
    mount -t tmpfs tmpfs /newroot/run
    mkdir /newroot$VM
    cp /init /bin/busybox /job /newroot$VM/
    for fs in proc sys dev; do mount --move /$fs /newroot/$fs; done
    exec switch_root /newroot $VM/busybox sh $VM/init guest
}

guest() {
    bb=$VM/busybox # explicit: on PATH, its applets would shadow the host's ip and tc
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
    export TERM=dumb COLUMNS=120 UDPTRACE_NO_VM=1 # no VM inside the VM
    # the guest's own /tmp; the host's stays reachable for host_path
    $bb mkdir $VM/host-tmp
    $bb mount --bind /tmp $VM/host-tmp
    $bb mount -t tmpfs tmpfs /tmp
    $bb mkdir -p /dev/pts /dev/shm
    $bb mount -t devpts devpts /dev/pts
    $bb mount -t tmpfs tmpfs /dev/shm
    $bb mount -t tracefs tracefs /sys/kernel/tracing
    $bb mount -t debugfs debugfs /sys/kernel/debug
    $bb mount -t bpf bpf /sys/fs/bpf
    $bb mount -t cgroup2 cgroup2 /sys/fs/cgroup
    $bb ip link set lo up
    marker "kernel $($bb uname -r)"
    . $VM/job
    $bb poweroff -f
}

host_path() { # host_path PATH: the host's PATH under /tmp (a clone there), at PATH here too
    $bb mkdir -p "$1"
    $bb mount --bind "$VM/host-tmp${1#/tmp}" "$1"
}

use_modules() { # the package's modules, loaded by the kernel on demand (veth, qdiscs...)
    $bb mkdir -p /lib/modules
    $bb ln -s "$1" "/lib/modules/$($bb uname -r)"
    $bb ln -s $bb $VM/modprobe
    echo $VM/modprobe >/proc/sys/kernel/modprobe
}

load_modules() { # load_modules NAME...: what the kernel does not ask for by itself (drivers)
    $bb modprobe -a "$@"
}

step() { # step NAME SECONDS COMMAND...
    name=$1 seconds=$2
    shift 2
    marker "begin $name"
    # not busybox's timeout: it runs its own applets
    /usr/bin/timeout -k 10 "$seconds" "$@" </dev/null 2>&1 &
    pid=$!
    (
        $bb sleep $((seconds + 30))
        stuck "$name"
    ) &
    watchdog=$!
    wait $pid
    status=$?
    kill $watchdog
    marker "end $name $status"
}

# A step that outlived its timeout's KILL is stuck in the kernel (a hang once seen on
# PREEMPT_RT printed nothing at all): say where every task is blocked, then power off
# rather than let the host wait out its own limit.
stuck() {
    marker "stuck $1"
    $bb dmesg | $bb tail -n 60 # what `quiet` kept off the console (warnings, say)
    for task in /proc/[0-9]*; do
        case "$($bb tr '\0' ' ' <"$task/cmdline" 2>/dev/null)" in
        *python*)
            for thread in "$task"/task/*; do
                echo "== task ${thread##*/} of ${task#/proc/}:" \
                    "$($bb cut -d' ' -f2-3 "$thread/stat") in $($bb cat "$thread/wchan")"
                $bb cat "$thread/stack"
            done 2>/dev/null
            ;;
        esac
    done
    echo w >/proc/sysrq-trigger # every blocked task, kernel threads too
    $bb poweroff -f
}

case "${1:-boot}" in
boot) boot ;;
guest) guest ;;
esac
