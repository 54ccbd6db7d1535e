"""The stage catalogue: what each stage of a packet means and how it can be hooked.

One entry per stage, in pipeline order. A stage is reached through one or
more hook points (places in the kernel); each point lists its hooks best
first, and :mod:`udptrace.kernel.plan` picks the first one this kernel
allows. The stage names match ``enum ut_stage`` in ``bpf/ut_record.h``
(``UT_STAGE_<NAME>``); a test checks the two agree.

Adding a stage: a value in ``enum ut_stage``, its BPF hook in the part of
``bpf/`` that serves its path, an entry here, and a test. Spans (``enum
ut_span``) are end-to-end times across several stages, listed here too.
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


def _typed_tracepoint(target: str, short: str) -> HookPoint:
    """A tracepoint used with typed arguments (tp_btf), or raw_tp where BTF lacks it."""
    return HookPoint(
        target.split(":", 1)[1],
        (Hook(HookKind.TP_BTF, target, f"ut_btf_{short}"),
         Hook(HookKind.RAW_TP, target, f"ut_raw_{short}")),
    )


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
    Stage("neigh_queue", "neighbour wait",
          "parked on the neighbour entry until ARP/ND resolves (first packet to a host)",
          (_typed_tracepoint("neigh:neigh_event_send_done", "neigh_queue"),)),
    Stage("dev_queue", "socket+UDP+IP",
          "syscall entry (or neighbour wait) until the device queue: socket, UDP, IP, "
          "routing, netfilter",
          (_typed_tracepoint("net:net_dev_queue", "dev_queue"),), core=True),
    Stage("qdisc_enqueue", "qdisc enqueue",
          "device queue until a queueing qdisc accepted it",
          (_typed_tracepoint("qdisc:qdisc_enqueue", "qdisc_enq"),)),
    Stage("qdisc_dequeue", "qdisc wait",
          "time spent inside the qdisc (shaping, scheduling, backlog)",
          (_typed_tracepoint("qdisc:qdisc_dequeue", "qdisc_deq"),)),
    Stage("xmit_start", "to driver",
          "until the driver's transmit function was called",
          (_typed_tracepoint("net:net_dev_start_xmit", "xmit_start"),), core=True),
    Stage("rx_handoff", "to peer",
          "veth/loopback only: until the packet entered the peer's receive path",
          (_typed_tracepoint("net:netif_rx", "netif_rx"),
           _typed_tracepoint("net:netif_receive_skb", "netif_recv"))),
    Stage("xmit_done", "driver",
          "the driver's transmit function: the packet has left the device",
          (_typed_tracepoint("net:net_dev_xmit", "xmit_done"),), core=True),
    Stage("free", "TX completion",
          "a NIC's TX completion freeing the skb, or the free that dropped it",
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

