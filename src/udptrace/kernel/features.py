"""Kernel feature probes, the way bpftrace's --info does it: by trying.

A config option or a version number says little under lockdown, so each
attach type is proven by loading and attaching a tiny program
(``bpf/ut_probe.bpf.c``) and detaching it again.
"""

from __future__ import annotations

import ctypes.util
import errno
import functools
import hashlib
import json
import os
import resource
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from udptrace import bpf
from udptrace.errors import BpfError, UdptraceError
from udptrace.kernel.tracefs import tracefs
from udptrace.loader.bpf_object import BpfObject, Program
from udptrace.loader.btf import Btf, Kind
from udptrace.loader.libbpf import lib

BPF_PROG_TYPE_TRACEPOINT = 5
BPF_MAP_TYPE_RINGBUF = 27
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39
SECURITYFS = Path("/sys/kernel/security")
# What a boot allows does not change until the next boot: the probes that load and attach
# programs (0.26 s, most of it the kernel detaching them) run once per boot and user.
CACHE_DIR = Path("/run/udptrace")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
ATTACH_PROBES = ("ringbuf", "tracepoint", "raw_tp", "tp_btf", "fentry", "kprobe", "uprobe")
REALTIME = Path("/sys/kernel/realtime")  # the PREEMPT_RT patch set's flag, "1"


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Features:
    kernel: str
    bpf_syscall: Probe
    privileges: Probe
    memlock: Probe
    btf: Probe
    tracefs: Probe
    ringbuf: Probe
    tracepoint: Probe
    raw_tp: Probe
    tp_btf: Probe
    fentry: Probe
    kprobe: Probe
    uprobe: Probe
    lockdown: Probe
    preempt_rt: Probe

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _privileges() -> Probe:
    caps = _capabilities()
    have = [name for bit, name in ((CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_BPF, "CAP_BPF"),
                                    (CAP_PERFMON, "CAP_PERFMON")) if caps >> bit & 1]
    root = os.geteuid() == 0
    ok = root or "CAP_SYS_ADMIN" in have or {"CAP_BPF", "CAP_PERFMON"} <= set(have)
    who = "root" if root else f"uid {os.geteuid()}"
    return Probe(ok, f"{who}, {', '.join(have) or 'no BPF capabilities'}")


def _memlock() -> Probe:
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY:
        return Probe(True, "unlimited")
    # since 5.11 BPF memory is charged to the memory cgroup, not to this limit
    return Probe(True, f"{soft // 1024} KiB (BPF memory is cgroup-accounted on 5.11+)")


def _lockdown() -> Probe:
    path = SECURITYFS / "lockdown"
    if not path.exists() and SECURITYFS.is_dir():
        subprocess.run(["mount", "-t", "securityfs", "none", str(SECURITYFS)],
                       capture_output=True, check=False)
    try:
        text = path.read_text().strip()
    except OSError:
        return Probe(True, "unknown (no securityfs)")
    mode = text[text.index("[") + 1:text.index("]")] if "[" in text else text
    return Probe(mode == "none", mode)


def _preempt_rt() -> Probe:
    """PREEMPT_RT: interrupts and softirqs run in threads, so a packet's step is run by a
    thread worth naming (its priority decides when it runs), not by a softirq "context"."""
    try:
        if REALTIME.read_text().strip() == "1":
            return Probe(True, str(REALTIME))
    except OSError:
        pass
    # mainline PREEMPT_RT (6.12+) has no such file; its task_struct counts the softirq
    # sections a thread is in (softirq_count() reads it), only under CONFIG_PREEMPT_RT
    try:
        btf = Btf.vmlinux()
    except UdptraceError:
        return Probe(False, "unknown (no vmlinux BTF)")
    task = btf.find("task_struct", Kind.STRUCT)
    if task and any(m.name == "softirq_disable_cnt" for m in btf.members(task)):
        return Probe(True, "task_struct.softirq_disable_cnt in BTF")
    return Probe(False, "not PREEMPT_RT")


def _btf() -> Probe:
    try:
        Btf.vmlinux()
    except UdptraceError as e:
        return Probe(False, str(e))
    return Probe(True, "/sys/kernel/btf/vmlinux")


def _tracefs() -> Probe:
    try:
        fs = tracefs()
    except UdptraceError as e:
        return Probe(False, str(e))
    return Probe(True, f"{fs.root}" + (" (mounted now)" if fs.mounted_by_us else ""))


def try_program(program: str, attach: Callable[[Program], object] | None = None) -> Probe:
    """Load and attach one probe program alone; the result says whether this kernel allows it."""
    try:
        obj = BpfObject(bpf.object_bytes("ut_probe"), "ut_probe")
    except UdptraceError as e:
        return Probe(False, str(e))
    with obj:
        for name, prog in obj.programs.items():
            prog.autoload = name == program
        try:
            obj.load()
            prog = obj.programs[program]
            (attach or Program.attach)(prog)
        except BpfError as e:
            return Probe(False, f"{os.strerror(e.errno)} (errno {e.errno})")
    return Probe(True, "loaded and attached")


def _uprobe() -> Probe:
    libc = ctypes.util.find_library("c") or "libc.so.6"
    return try_program("ut_probe_uprobe",
                       lambda prog: prog.attach_uprobe(libc, "getpid", pid=os.getpid()))


def _bpf_syscall() -> Probe:
    rc = lib.libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_TRACEPOINT, None)
    if rc == 1:
        return Probe(True, "tracing programs load")
    err = -rc if rc < 0 else errno.EPERM
    return Probe(False, f"cannot load BPF programs: {os.strerror(err)}")


def _ringbuf() -> Probe:
    rc = lib.libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, None)
    return Probe(rc == 1, "BPF_MAP_TYPE_RINGBUF" if rc == 1 else "no ring buffer (needs 5.8+)")


def _attach_probes() -> dict[str, Probe]:
    return {
        "ringbuf": _ringbuf(),
        "tracepoint": try_program("ut_probe_tp"),
        "raw_tp": try_program("ut_probe_raw_tp"),
        "tp_btf": try_program("ut_probe_tp_btf"),
        "fentry": try_program("ut_probe_fentry"),
        "kprobe": try_program("ut_probe_kprobe"),
        "uprobe": _uprobe(),
    }


def cache_path() -> Path | None:
    """This boot's file of probe results for this user and these probe programs (a new
    udptrace may probe otherwise); None where the boot has no id."""
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        return None
    probes = hashlib.sha256(bpf.object_bytes("ut_probe")).hexdigest()[:16]
    return CACHE_DIR / f"features-{boot}-{os.geteuid()}-{probes}.json"


def _boot_attach_probes(path: Path | None, reuse: bool) -> dict[str, Probe]:
    """This boot's saved results when `reuse` and saved, else probed now and saved."""
    if path is not None and reuse:
        try:
            saved = json.loads(path.read_text())
            return {name: Probe(**saved[name]) for name in ATTACH_PROBES}
        except (OSError, ValueError, KeyError, TypeError):
            pass
    probes = _attach_probes()
    if path is not None:
        try:
            path.parent.mkdir(mode=0o755, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}")
            temporary.write_text(json.dumps({k: asdict(v) for k, v in probes.items()}))
            temporary.replace(path)  # whole or absent: a concurrent run never reads half
        except OSError:
            pass  # unwritable /run: probe again next time
    return probes


@functools.cache
def detect(cached: bool = True) -> Features:
    """What this kernel allows; `cached` takes the attach probes from this boot's earlier
    run (`udptrace check` tries them afresh, and saves what it found)."""
    bpf_syscall = _bpf_syscall()
    # tracefs first: attaching a tracepoint reads its id there, so on a fresh boot, where
    # nothing has mounted it yet, the tracepoint probe would fail (ENOENT) and be saved so
    tracefs_probe = _tracefs()
    if bpf_syscall.ok:
        attach = _boot_attach_probes(cache_path(), reuse=cached)
    else:
        attach = dict.fromkeys(ATTACH_PROBES, Probe(False, "BPF unavailable"))
    return Features(
        kernel=os.uname().release,
        bpf_syscall=bpf_syscall,
        privileges=_privileges(),
        memlock=_memlock(),
        btf=_btf(),
        tracefs=tracefs_probe,
        lockdown=_lockdown(),
        preempt_rt=_preempt_rt(),
        **attach,
    )
