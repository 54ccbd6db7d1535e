"""What to trace: command-line choices checked against this machine, then one config struct.

Every check runs before anything is loaded, so bad input ends with a one-line
error and nothing attached.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from udptrace.errors import UsageError
from udptrace.stages import BOTH, RECEIVE, SEND, STAGE_NAMES, Stage, TracePath

NETNS_DIR = Path("/run/netns")
DEFAULT_RINGBUF_BYTES = 8 << 20
WAKEUP_FRACTION = 4  # a reader waiting on the ring buffer is woken when 1/4 of it is full
DEFAULT_MAX_AGE_S = 10.0
UADP_PORT = 4840
SNAPLEN_MAX = 128  # UT_FRAME_BYTES in bpf/ut_record.h, held to it by a test
DEFAULT_SNAPLEN = 128  # record's: Ethernet, IPv6 and UDP headers and 66 payload bytes


@dataclass(frozen=True)
class TraceOptions:
    pids: tuple[int, ...] = ()
    comm: str = ""
    ports: tuple[int, ...] = ()
    src: tuple[str, ...] = ()
    dst: tuple[str, ...] = ()
    ifname: str = ""
    netns: str = ""
    stream: bool = False  # per-packet records through the ring buffer
    payload_port: int = 0  # copy UDP payload bytes for this port (PubSub attribution)
    snaplen: int = 0  # frame bytes each record keeps (pcapng); 0 = none
    ringbuf_bytes: int = DEFAULT_RINGBUF_BYTES
    max_age_s: float = DEFAULT_MAX_AGE_S
    uprobe: str = ""  # BINARY:SYMBOL whose entry starts the records of its sends
    intervals: bool = False  # per-flow send intervals, aggregated in the kernel
    stages: tuple[str, ...] = ()  # only these optional stages (core ones always); () = all
    rx: bool = False  # receive records only: every UDP datagram a receive path sees
    e2e: bool = False  # followed sends go on into this host's receive path
    wakeup: bool = False  # the sending threads' wake-ups: stages timer, wakeup, on_cpu
    contexts: bool = True  # where the driver and TX completions ran (three hooks per softirq)

    def asks_for(self, needs: str) -> bool:
        """Whether an opt-in stage that `needs` this option is asked for."""
        return {"": True, "--uprobe": bool(self.uprobe), "--wakeup": self.wakeup}[needs]

    @property
    def paths(self) -> frozenset[TracePath]:
        if self.rx:
            return RECEIVE
        return BOTH if self.e2e else SEND


def check_pid(pid: int) -> None:
    if pid <= 0 or not Path(f"/proc/{pid}").is_dir():
        raise UsageError(f"no process with pid {pid}: check it with 'ps -p {pid}'")


def check_ringbuf_bytes(size: int) -> None:
    if size < os.sysconf("SC_PAGE_SIZE") or size & (size - 1):
        raise UsageError("ring buffer size must be a power of two of at least one page")


def check_snaplen(snaplen: int) -> None:
    if not 0 <= snaplen <= SNAPLEN_MAX:
        raise UsageError(f"--snaplen {snaplen}: from 0 (no frame bytes) to {SNAPLEN_MAX}, "
                         "the most of a frame a record keeps")


def _check_port(port: int) -> None:
    if not 0 < port < 65536:
        raise UsageError(f"port {port} is out of range: give a port between 1 and 65535")


def parse_network(text: str) -> ipaddress.IPv6Network:
    """An address or CIDR; IPv4 becomes its IPv4-mapped IPv6 form, as the BPF side stores it."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise UsageError(
            f"'{text}' is not an address or CIDR: use e.g. 10.0.0.1, 10.0.0.0/24 or fd00::/64"
        ) from None
    if isinstance(net, ipaddress.IPv4Network):
        mapped = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + net.network_address.packed)
        return ipaddress.IPv6Network((mapped, 96 + net.prefixlen))
    return net


def netns_inode(spec: str) -> int:
    """A network namespace by name (ip netns), path, or inode number."""
    if spec.isdigit():
        return int(spec)
    path = Path(spec) if "/" in spec else NETNS_DIR / spec
    try:
        return path.stat().st_ino
    except OSError:
        raise UsageError(
            f"no network namespace '{spec}': list them with 'ip netns list', or give "
            "a path such as /proc/PID/ns/net or an inode number"
        ) from None


def _interfaces_in(net_dev: Path) -> set[str]:
    try:
        lines = net_dev.read_text().splitlines()[2:]
    except OSError:
        return set()
    return {line.split(":", 1)[0].strip() for line in lines}


def _interfaces_in_named_netns(name: str) -> set[str]:
    result = subprocess.run(["ip", "-n", name, "-o", "link", "show"], capture_output=True,
                            text=True, check=False)
    return {line.split(":")[1].strip().split("@")[0] for line in result.stdout.splitlines()
            if line.count(":") >= 2}


def _check_interface(name: str, pids: tuple[int, ...], netns: str) -> None:
    """The device must exist here, in a traced process's namespace, or in a named netns."""
    if len(name.encode()) > 15:
        raise UsageError(f"interface name '{name}' is longer than 15 characters")
    places = [Path("/proc/self/net/dev")] + [Path(f"/proc/{p}/net/dev") for p in pids]
    seen = set().union(*(_interfaces_in(p) for p in places))
    if name in seen:
        return
    named = [netns] if netns and not netns.isdigit() and "/" not in netns else (
        sorted(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else [])
    if any(name in _interfaces_in_named_netns(ns) for ns in named):
        return
    raise UsageError(
        f"no interface '{name}' here, in the traced processes' or in named namespaces: "
        "list them with 'ip link' (or 'ip -n NS link')"
    )


def comm_running(comm: str) -> bool:
    for path in Path("/proc").glob("[0-9]*/task/[0-9]*/comm"):
        try:
            if path.read_text().rstrip("\n") == comm:
                return True
        except OSError:
            continue
    return False


def parse_stages(text: str) -> tuple[str, ...]:
    """`--stages a,b,c`; 'core' alone keeps the core stages only."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    return () if not names else (("core",) if names == ("core",) else names)


def stage_chosen(stage: Stage, chosen: tuple[str, ...]) -> bool:
    """Whether --stages keeps this stage: core stages and opt-in ones (their own flag asks
    for them) always, the other optional ones when named."""
    return not chosen or stage.core or bool(stage.needs) or stage.name in chosen


def validate(options: TraceOptions) -> None:
    for pid in options.pids:
        check_pid(pid)
    for port in (*options.ports, *((options.payload_port,) if options.payload_port else ())):
        _check_port(port)
    if len(options.comm.encode()) > 15:
        raise UsageError(
            f"comm '{options.comm}' is longer than 15 characters: the kernel keeps only the "
            f"first 15, use '{options.comm.encode()[:15].decode(errors='ignore')}'"
        )
    if options.netns:
        netns_inode(options.netns)
    if options.ifname:
        _check_interface(options.ifname, options.pids, options.netns)
    check_ringbuf_bytes(options.ringbuf_bytes)
    check_snaplen(options.snaplen)
    for text in (*options.src, *options.dst):
        parse_network(text)
    unknown = [s for s in options.stages if s not in (*STAGE_NAMES, "core")]
    if unknown:
        raise UsageError(f"--stages: no stage {', '.join(unknown)}: choose from "
                         f"{', '.join(STAGE_NAMES)} (or 'core' for the core stages only)")
    if options.rx and options.e2e:
        raise UsageError("--rx (receive records only) and --e2e (send joined to receive) "
                         "exclude each other: choose one")
    if options.rx and (options.uprobe or options.intervals or options.wakeup):
        raise UsageError("--uprobe, --interval and --wakeup follow sends: they do not combine "
                         "with --rx")
    if options.wakeup and not (options.pids or options.comm or options.uprobe):
        raise UsageError("--wakeup follows the sending threads: name them with -p PID, -c COMM "
                         "or --uprobe BINARY:SYMBOL")


def config_bytes(options: TraceOptions, config: type[ctypes.Structure], kfree_has_reason: bool,
                 contexts: bool, typed: bool = False, record_bytes: int = 0,
                 hrtimer_wakeup: int = 0, threads: bool = False,
                 syscall_nr: Sequence[int] = ()) -> bytes:
    """The ``struct ut_config`` image written into the object's .rodata before load;
    `contexts`: the softirq hooks are attached, so packets' contexts can be told;
    `threads`: with them, each step's thread (PREEMPT_RT, where threads run softirqs);
    `typed`: every hook that is handed kernel objects knows their types (tp_btf);
    `record_bytes`: how much of each record the ring buffer carries;
    `hrtimer_wakeup`: the kernel address that tells sleep timers (--wakeup);
    `syscall_nr`: each ut_syscall's number here, from 1 (the raw_syscalls hooks pick them)."""
    cfg = config()
    cfg.max_age_ns = int(options.max_age_s * 1e9)
    cfg.hrtimer_wakeup = hrtimer_wakeup
    cfg.filter_pid = bool(options.pids)
    cfg.only_pid = options.pids[0] if len(set(options.pids)) == 1 else 0
    cfg.typed = typed
    cfg.record_bytes = record_bytes
    cfg.wakeup_bytes = options.ringbuf_bytes // WAKEUP_FRACTION if options.stream else 0
    cfg.filter_port = bool(options.ports)
    cfg.filter_src = bool(options.src)
    cfg.filter_dst = bool(options.dst)
    cfg.netns = netns_inode(options.netns) if options.netns else 0
    cfg.stream = options.stream
    cfg.kfree_has_reason = kfree_has_reason
    cfg.intervals = options.intervals
    cfg.send = TracePath.SEND in options.paths
    cfg.rx = options.rx
    cfg.e2e = options.e2e
    cfg.wakeup = options.wakeup
    cfg.contexts = contexts
    cfg.threads = contexts and threads
    cfg.payload_port = options.payload_port
    cfg.snaplen = options.snaplen if options.stream else 0
    numbers = [-1] * len(cfg.syscall_nr)
    numbers[1:len(syscall_nr) + 1] = syscall_nr
    cfg.syscall_nr[:] = numbers
    cfg.comm = options.comm.encode()
    cfg.ifname = options.ifname.encode()
    return bytes(cfg)
