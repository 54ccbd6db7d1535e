"""The stage catalogue: what each stage of a packet means and how it can be hooked.

One entry per stage, in pipeline order. A stage is reached through one or
more hook points (places in the kernel); each point lists its hooks best
first, and :mod:`udptrace.kernel.plan` picks the first one this kernel
allows. The stage names match ``enum ut_stage`` in ``bpf/ut_record.h``
(``UT_STAGE_<NAME>``); a test checks the two agree.

Adding a stage: a value in ``enum ut_stage``, its BPF hook in the part of
``bpf/`` that serves its path, an entry here, and a test. Spans (``enum
ut_span``) are end-to-end times across several stages, listed here too.

Stages at kernel functions (fentry, kprobe) are optional: a kernel that
refuses both, or lacks the function, traces without them.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    meaning: str  # what the time spent before reaching this stage is
    points: tuple[HookPoint, ...]
    core: bool = False  # without it the send path cannot be followed
    needs: str = ""  # the option that asks for it; empty: always traced when available


@dataclass(frozen=True)
class Span:
    """A time across stages (or outside them), with its own histogram."""

    name: str
    title: str
    meaning: str


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


# Where the CPU runs when the driver is called or a TX completion frees the packet: the
# softirq being served, and when NET_TX was raised (the record's xmit_context and
# completion_context, and its softirq_pending_ns). Attached in this order: with the exit
# hook first, no softirq whose entry was seen can end unseen and leave its CPU marked.
CONTEXT_POINTS = tuple(_typed_tracepoint(f"irq:{name}", name, refines=True)
                       for name in ("softirq_exit", "softirq_entry", "softirq_raise"))

# x86_64 has no send(2): libc's send() is sendto(); write/writev reach UDP sockets too.
SEND_SYSCALLS = ("sendto", "sendmsg", "sendmmsg", "write", "writev")


def _syscall_points() -> tuple[HookPoint, ...]:
    points = []
    for syscall in SEND_SYSCALLS:
        for edge in ("enter", "exit"):
            tracepoint = f"sys_{edge}_{syscall}"
            points.append(HookPoint(tracepoint, (
                Hook(HookKind.TRACEPOINT, f"syscalls:{tracepoint}", f"ut_{edge}_{syscall}"),)))
    return tuple(points)


# the callback's entry and return; the binary and the function come from --uprobe
APP_POINTS = (
    HookPoint("callback entry", (Hook(HookKind.UPROBE, "entry", "ut_app_entry"),)),
    HookPoint("callback return", (Hook(HookKind.UPROBE, "return", "ut_app_return"),)),
)

STAGES: tuple[Stage, ...] = (
    Stage("app", "callback entry",
          "the application's function (--uprobe) was entered: first stage of its sends",
          APP_POINTS, needs="--uprobe"),
    Stage("syscall", "to syscall",
          "until the send syscall's entry (from the callback's entry with --uprobe); "
          "time zero of the send path",
          _syscall_points(), core=True),
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
    Stage("neigh_queue", "neighbour wait",
          "parked on the neighbour entry until ARP/ND resolves (first packet to a host)",
          (_typed_tracepoint("neigh:neigh_event_send_done", "neigh_queue"),)),
    Stage("dev_queue", "to device queue",
          "until the device queue: from the syscall entry, socket, UDP, IP, routing, "
          "netfilter, neighbour (only the neighbour output after ip_output, the "
          "neighbour's answer after neigh_queue)",
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
           _typed_tracepoint("net:netif_receive_skb", "netif_recv"))),
    Stage("xmit_done", "driver",
          "the driver's transmit function: the packet has left the device",
          (_typed_tracepoint("net:net_dev_xmit", "xmit_done"),), core=True),
    Stage("free", "TX completion",
          "a NIC's TX completion freeing the skb (in the record's completion_context), "
          "or the free that dropped it",
          (_typed_tracepoint("skb:consume_skb", "consume"),
           _typed_tracepoint("skb:kfree_skb", "kfree")), core=True),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)

# In the order of ``enum ut_span``; their histograms follow the stages' in the kernel.
SPANS: tuple[Span, ...] = (
    Span("send_syscall", "whole syscall", "the send syscall, from its entry to its return"),
    Span("total", "sendto→wire", "send syscall entry until the packet left the device"),
    Span("app_to_wire", "app→wire", "callback entry (--uprobe) until the packet left the device"),
)
SPAN_NAMES: tuple[str, ...] = tuple(s.name for s in SPANS)

