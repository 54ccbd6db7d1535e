"""The stage catalogue: what each stage of a packet means and how it can be hooked.

One entry per stage, in pipeline order. A stage is reached through one or
more hook points (places in the kernel); each point lists its hooks best
first, and :mod:`udptrace.kernel.plan` picks the first one this kernel
allows. The stage names match ``enum ut_stage`` in ``bpf/ut_record.h``
(``UT_STAGE_<NAME>``); a test checks the two agree.

Adding a stage: a value in ``enum ut_stage``, its BPF hook in the part of
``bpf/`` that serves its path, an entry here, and a test. Spans (``enum
ut_span``) are end-to-end times across several stages, listed here too, each
from one stage role to another: a role is the first of a few stages (or
times a record keeps beside them) that a record has, such as "left the
device": ``xmit_done``, else ``free``. The kernel's spans read the roles from
``enum ut_role``; the decoder and the reports from here.

Stages at kernel functions (fentry, kprobe) are optional: a kernel that
refuses both, or lacks the function, traces without them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class HookKind(StrEnum):
    TP_BTF = "tp_btf"
    RAW_TP = "raw_tp"
    TRACEPOINT = "tracepoint"
    FENTRY = "fentry"
    KPROBE = "kprobe"
    UPROBE = "uprobe"  # a function in a user-space binary, named at run time


@dataclass(frozen=True)
class Hook:
    kind: HookKind
    target: str  # "category:tracepoint" for tracepoints, a function name otherwise
    program: str  # the BPF program in the object that implements it

    @property
    def tracepoint(self) -> str:
        return self.target.split(":", 1)[-1]

    def __str__(self) -> str:
        return f"{self.kind}:{self.tracepoint if self.kind != HookKind.TRACEPOINT else self.target}"


@dataclass(frozen=True)
class HookPoint:
    """One place in the kernel; its hooks are alternatives, best first."""

    name: str
    hooks: tuple[Hook, ...]
    refines: bool = False  # adds detail to the stage's records; the stage is reached without it


class TracePath(StrEnum):
    SEND = "send"  # from the send syscall to the wire
    RECEIVE = "receive"  # from the driver (or a veth/lo handoff) to the reader


SEND = frozenset({TracePath.SEND})
RECEIVE = frozenset({TracePath.RECEIVE})
BOTH = frozenset(TracePath)


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    meaning: str  # what the time spent before reaching this stage is
    points: tuple[HookPoint, ...]
    core: bool = False  # without it its paths cannot be followed
    needs: str = ""  # the option that asks for it; empty: always traced when available
    paths: frozenset[TracePath] = SEND  # the paths it belongs to


@dataclass(frozen=True)
class Role:
    """A point of a packet's journey that spans and views are measured from or to: the first
    of `times` a record has, each a stage it reached or a time it keeps beside its stages
    (a field of ``struct ut_record``: ``timer_expires``, ``txtime``, ``syscall_exit``)."""

    name: str
    times: tuple[str, ...]
    meaning: str
    # the kernel's spans use it: ``enum ut_role`` names its stages, UT_ROLE_<NAME>_<position>
    kernel: bool = False


@dataclass(frozen=True)
class Span:
    """A time across stages (or outside them), with its own histogram: from one role to
    another, counted for the records that reach its end."""

    name: str
    title: str
    meaning: str
    start: Role
    end: Role

    @property
    def counted_for(self) -> str:
        """Which records the span is counted for, as the kernel counts it: ``syscall`` (once
        per send syscall), ``received`` (datagrams a reader received), or ``sent`` (packets
        that left the device)."""
        if self.end is SYSCALL_RETURN:
            return "syscall"
        return "received" if self.end is RX_END else "sent"


def _typed_tracepoint(target: str, short: str, refines: bool = False) -> HookPoint:
    """A tracepoint used with typed arguments (tp_btf), or raw_tp where BTF lacks it."""
    return HookPoint(
        target.split(":", 1)[1],
        (Hook(HookKind.TP_BTF, target, f"ut_btf_{short}"),
         Hook(HookKind.RAW_TP, target, f"ut_raw_{short}")),
        refines,
    )


def _function(name: str) -> HookPoint:
    """A kernel function's entry: fentry, or a kprobe where fentry is refused."""
    return HookPoint(name, (Hook(HookKind.FENTRY, name, f"ut_fentry_{name}"),
                            Hook(HookKind.KPROBE, name, f"ut_kprobe_{name}")))


def _fallback(point: HookPoint, function: str) -> HookPoint:
    """A tracepoint that older kernels lack, with the kernel function it is traced in
    (or the one that ends the same step) as a last resort."""
    return replace(point, hooks=point.hooks + _function(function).hooks)


# Where the CPU runs when the driver is called or a TX completion frees the packet: the
# softirq being served, and when NET_TX was raised (the record's xmit_context and
# completion_context, and its softirq_pending_ns). Attached in this order: with the exit
# hook first, no softirq whose entry was seen can end unseen and leave its CPU marked.
CONTEXT_POINTS = tuple(_typed_tracepoint(f"irq:{name}", name, refines=True)
                       for name in ("softirq_exit", "softirq_entry", "softirq_raise"))

# Every syscall passes raw_syscalls:sys_enter/sys_exit: their programs pick the traced
# ones by number (config_bytes: syscall_numbers), one link each instead of one per syscall.
def raw_syscall_points(prefix: str) -> tuple[HookPoint, ...]:
    """The raw_syscalls hooks of the programs `prefix`_{btf,raw,tp}_{enter,exit}."""
    return tuple(
        HookPoint(edge, (Hook(HookKind.TP_BTF, f"raw_syscalls:{edge}", f"{prefix}_btf_{short}"),
                         Hook(HookKind.RAW_TP, f"raw_syscalls:{edge}", f"{prefix}_raw_{short}"),
                         Hook(HookKind.TRACEPOINT, f"raw_syscalls:{edge}", f"{prefix}_tp_{short}")))
        for edge, short in (("sys_enter", "enter"), ("sys_exit", "exit")))


# The syscalls of enum ut_syscall, by their <asm/unistd.h> names: where not the same, here.
# (The send syscalls: x86_64 has no send(2), libc's send() is sendto(); write/writev,
# sendfile and splice reach UDP sockets too. io_uring_enter's return ends the thread's
# io_uring sends. A reader's datagram returns through recvfrom (recv(2) on x86_64) and co.)
UNISTD_NAMES = {"io_uring": "io_uring_enter"}
SYSCALL_ENTRY, SYSCALL_EXIT = raw_syscall_points("ut_sys")

# io_uring send requests: time zero at their submission, ended by io_uring_enter's return
IO_URING_POINTS = (
    HookPoint("io_uring_submit_req", (
        Hook(HookKind.TRACEPOINT, "io_uring:io_uring_submit_req", "ut_iou_submit"),)),
)


# the callback's entry and return; the binary and the function come from --uprobe
APP_POINTS = (
    HookPoint("callback entry", (Hook(HookKind.UPROBE, "entry", "ut_app_entry"),)),
    HookPoint("callback return", (Hook(HookKind.UPROBE, "return", "ut_app_return"),)),
)

STAGES: tuple[Stage, ...] = (
    # the sending thread's wake-up before its send; sched_switch runs for every context
    # switch on the machine, hence opt-in
    Stage("timer", "timer expiry",
          "the hrtimer the sending thread slept on expired (--wakeup): first stage of its "
          "cycle; the expiry it asked for is the record's timer_expires",
          (_typed_tracepoint("timer:hrtimer_expire_entry", "timer_expire"),), needs="--wakeup"),
    Stage("wakeup", "to wakeup",
          "until the scheduler woke the thread (sched:sched_wakeup), by its timer or otherwise",
          (_typed_tracepoint("sched:sched_wakeup", "sched_wakeup"),), needs="--wakeup"),
    Stage("on_cpu", "to on CPU",
          "woken until a CPU switched to it (sched:sched_switch): the scheduling latency",
          (_typed_tracepoint("sched:sched_switch", "sched_switch"),), needs="--wakeup"),
    Stage("app", "callback entry",
          "the application's function (--uprobe) was entered: first stage of its sends",
          APP_POINTS, needs="--uprobe"),
    Stage("syscall", "to syscall",
          "until the send syscall's entry (from the callback's entry with --uprobe, from "
          "being on a CPU with --wakeup); time zero of the send path",
          (SYSCALL_ENTRY, SYSCALL_EXIT, *IO_URING_POINTS), core=True),
    Stage("udp_sendmsg", "socket layer",
          "syscall entry until udp_sendmsg (udpv6_sendmsg): the socket layer",
          (_function("udp_sendmsg"), _function("udpv6_sendmsg"))),
    Stage("udp_send_skb", "build datagram",
          "until udp_send_skb (udp_v6_send_skb): route lookup, the datagram built and the "
          "payload copied (ip_make_skb)",
          (_function("udp_send_skb"), _function("udp_v6_send_skb"))),
    Stage("ip_send_skb", "UDP header",
          "until ip_send_skb (ip6_send_skb): the UDP header and checksum",
          (_function("ip_send_skb"), _function("ip6_send_skb"))),
    Stage("ip_output", "IP output",
          "until ip_finish_output2 (ip6_finish_output2): IP output, netfilter, "
          "fragmentation; the neighbour comes next",
          (_function("ip_finish_output2"), _function("ip6_finish_output2"))),
    Stage("neigh_parked", "to neighbour",
          "until it was parked on the neighbour entry to await ARP/ND (first packet to a "
          "host)",
          (_typed_tracepoint("neigh:neigh_event_send_done", "neigh_queue"),
           _typed_tracepoint("neigh:neigh_create", "neigh_create"),
           _typed_tracepoint("neigh:neigh_update", "neigh_update"))),
    Stage("neigh_queue", "neighbour wait",
          "parked until ARP/ND resolved and it went on, whether later from softirq or at "
          "once within the syscall",
          (_typed_tracepoint("neigh:neigh_event_send_done", "neigh_queue"),)),
    Stage("dev_queue", "to device queue",
          "until the device queue: from the syscall entry, socket, UDP, IP, routing, "
          "netfilter, neighbour; only the neighbour output after ip_output; nothing after a "
          "neighbour wait",
          (_typed_tracepoint("net:net_dev_queue", "dev_queue"),), core=True),
    Stage("qdisc_enqueue", "qdisc enqueue",
          "device queue until a queueing qdisc accepted it",
          (_typed_tracepoint("qdisc:qdisc_enqueue", "qdisc_enq"),)),
    Stage("qdisc_dequeue", "qdisc wait",
          "time spent inside the qdisc (shaping, scheduling, backlog)",
          (_typed_tracepoint("qdisc:qdisc_dequeue", "qdisc_deq"),)),
    Stage("dev_xmit", "out of qdisc",
          "until dev_hard_start_xmit: out of the qdisc layer (or past a queueless device's) "
          "on the way to the driver",
          (_function("dev_hard_start_xmit"),)),
    Stage("xmit_start", "to driver",
          "until the driver's transmit function was called, directly by the sender or from "
          "a softirq (the record's xmit_context)",
          (_typed_tracepoint("net:net_dev_start_xmit", "xmit_start"), *CONTEXT_POINTS),
          core=True),
    Stage("rx_handoff", "to peer",
          "veth/loopback only: until the packet entered the peer's receive path",
          (_typed_tracepoint("net:netif_rx", "netif_rx"),
           _typed_tracepoint("net:netif_receive_skb", "netif_recv")),
          # without it a veth/lo send ends only when the peer frees the skb, maybe never
          core=True),
    Stage("xmit_done", "driver",
          "the driver's transmit function: the packet has left the device",
          (_typed_tracepoint("net:net_dev_xmit", "xmit_done"),
           # a socket's SO_TIMESTAMPING stamps, taken by the driver (or the NIC), beside ours
           _typed_tracepoint("sock:inet_sk_error_report", "sk_error_report")), core=True),
    Stage("free", "TX completion",
          "a NIC's TX completion freeing the skb (in the record's completion_context), "
          "or the free that dropped it (on the receive path: the drop, with its reason)",
          (_typed_tracepoint("skb:consume_skb", "consume"),
           _typed_tracepoint("skb:kfree_skb", "kfree")), core=True, paths=BOTH),
    Stage("rx_driver", "to receive",
          "until a driver handed it to the stack (NAPI, or netif_rx for veth/lo); with "
          "--e2e on veth/lo this is the handoff",
          (_typed_tracepoint("net:napi_gro_receive_entry", "napi_rx"),
           _typed_tracepoint("net:netif_rx", "netif_rx")), paths=RECEIVE),
    Stage("rx_stack", "receive backlog",
          "until the stack took it from the receive queue (net:netif_receive_skb)",
          (_typed_tracepoint("net:netif_receive_skb", "netif_recv"),), core=True,
          paths=RECEIVE),
    Stage("udp_rcv", "IP receive",
          "until udp_rcv (udpv6_rcv): IP receive and netfilter done, UDP next",
          (_function("udp_rcv"), _function("udpv6_rcv")), paths=RECEIVE),
    Stage("udp_queue", "UDP receive",
          "until __udp_enqueue_schedule_skb: UDP's checks and socket lookup done, the "
          "socket's receive-buffer check and queueing next",
          (_function("__udp_enqueue_schedule_skb"),), paths=RECEIVE),
    Stage("sock_queue", "IP+UDP receive",
          "until it was queued on a socket: IP, netfilter, UDP, socket lookup; only the "
          "receive-buffer accounting and the queue's lock after udp_queue",
          (_fallback(_typed_tracepoint("sock:sk_data_ready", "sock_queue"),
                     "sock_def_readable"),), paths=RECEIVE),
    Stage("udp_recvmsg", "to reader",
          "until a reader in udp_recvmsg (udpv6_recvmsg) came for it: how long it sat in the "
          "socket's queue, how late the application read it; 0 when a reader was blocked "
          "there (one woken by poll/epoll comes only after its wake-up)",
          (_function("udp_recvmsg"), _function("udpv6_recvmsg")), paths=RECEIVE),
    Stage("rx_read", "socket queue wait",
          "until the reader's recvmsg took it (sock:sock_recv_length): how long it sat in "
          "the socket's queue, how late the application read it; only the wake-up and the "
          "copy after udp_recvmsg",
          (_fallback(_typed_tracepoint("sock:sock_recv_length", "sock_read"),
                     "skb_consume_udp"),), core=True, paths=RECEIVE),
    Stage("rx_done", "to recv return",
          "until the reader's receive syscall returned",
          (SYSCALL_EXIT,), paths=RECEIVE),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)

# Stage roles, each once; those the kernel uses are in ``enum ut_role`` too (a test holds
# the two together).
TIME_ZERO = Role("time_zero", ("syscall",),
                 "the send syscall's entry (an io_uring send's submission): every stage's "
                 "offset counts from it; a record with no send (--rx) counts from its first "
                 "stage", kernel=True)
SYSCALL_RETURN = Role("syscall_return", ("syscall_exit",), "the send syscall returned")
CALLBACK = Role("callback", ("app",), "the application's function was entered (--uprobe)",
                kernel=True)
SEND_START = Role("send_start", ("app", "syscall"),
                  "where a send began: its callback's entry, else its syscall's")
WIRE = Role("wire", ("xmit_done", "free"),
            "the packet left the device: the driver returned, else a NIC's TX completion "
            "freed it", kernel=True)
RX_START = Role("rx_start", ("rx_handoff", "rx_driver", "rx_stack"),
                "it entered a receive path: a veth/lo handoff, else a driver, else the stack",
                kernel=True)
RX_END = Role("rx_end", ("rx_done", "rx_read"),
              "the reader's receive syscall returned, else its read took the datagram",
              kernel=True)
# A cycle begins at the wake-up the thread asked for. Not at its callback or syscall: a send
# with no wake-up before it (a busy thread, the first send) has no cycle, and counting its
# send as one would mix two different times in one distribution and its jitter.
CYCLE_START = Role("cycle_start", ("timer_expires", "timer", "wakeup"),
                   "the wake-up the sending thread asked for (its timer's requested expiry), "
                   "else its timer's expiry, else its wakeup (--wakeup)", kernel=True)
# the cycle view's parts (report/cycle.py)
ON_CPU = Role("on_cpu", ("on_cpu",), "the woken thread was switched onto a CPU (--wakeup)")
RUNNING = Role("running", ("on_cpu", "app"),
               "the thread runs its cycle's work: on a CPU after its wake-up, else in its "
               "callback")
QDISC_HELD = Role("qdisc_held", ("qdisc_enqueue",), "a queueing qdisc took the packet")
STACK_END = Role("stack_end", ("qdisc_enqueue", "xmit_start"),
                 "the stack handed the packet on: to a queueing qdisc, else to the driver")
DRIVER = Role("driver", ("xmit_start",), "the driver's transmit function was called")
LAUNCH_TIME = Role("launch_time", ("txtime",), "the datagram's launch time (SO_TXTIME)")
ROLES: tuple[Role, ...] = (TIME_ZERO, SYSCALL_RETURN, CALLBACK, SEND_START, WIRE, RX_START,
                           RX_END, CYCLE_START, ON_CPU, RUNNING, QDISC_HELD, STACK_END, DRIVER,
                           LAUNCH_TIME)
# Where a datagram with a launch time is compared with it: each of entering the qdisc,
# leaving it, entering the driver
LAUNCH_STAGES = ("qdisc_enqueue", "qdisc_dequeue", "xmit_start")

# In the order of ``enum ut_span``; their histograms follow the stages' in the kernel.
SPANS: tuple[Span, ...] = (
    Span("send_syscall", "whole syscall", "the send syscall, from its entry to its return",
         TIME_ZERO, SYSCALL_RETURN),
    Span("total", "sendto→wire", "send syscall entry until the packet left the device",
         TIME_ZERO, WIRE),
    Span("app_to_wire", "app→wire", "callback entry (--uprobe) until the packet left the device",
         CALLBACK, WIRE),
    Span("rx", "wire→app", "entering the receive path until the reader's receive syscall "
         "returned", RX_START, RX_END),
    Span("e2e", "sendto→recv", "the sender's syscall entry until the reader's receive syscall "
         "returned (--e2e)", TIME_ZERO, RX_END),
    Span("cycle", "wake→wire", "the requested wake-up (the timer's expiry as asked, else the "
         "wakeup) until the packet left the device (--wakeup)", CYCLE_START, WIRE),
)
SPAN_NAMES: tuple[str, ...] = tuple(s.name for s in SPANS)
SPANS_BY_NAME: dict[str, Span] = {s.name: s for s in SPANS}



# Not a stage of a packet: the hooks of `udptrace syscalls`, every syscall of one process.
SYSCALL_VIEW = Stage(
    "syscalls", "every syscall", "entry to exit of each syscall of the traced process",
    raw_syscall_points("ut_sc"))
