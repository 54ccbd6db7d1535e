"""Finer send and receive stages at kernel functions: fentry where the kernel allows it,
kprobes as the fallback, and no harm (nothing loaded, nothing recorded) where it allows
neither.

This host refuses both (lockdown): the tests that need them are marked `vm` and run on
Debian's 6.1 kernel in tests/test_vm.py; here they skip with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import bpf_programs
import numpy as np
import pytest
from conftest import (
    connected_to_listener,
    records,
    send_from,
    start_tracer,
    tracing,
    udptrace,
)
from test_trace_send_path import sendmmsg

from udptrace.kernel import features as kernel_features
from udptrace.kernel import symbols
from udptrace.kernel.plan import plan_stages
from udptrace.kernel.tracefs import tracefs
from udptrace.loader.btf import Btf
from udptrace.netns import VethPair, inside
from udptrace.trace import attach as trace_attach
from udptrace.trace import session as trace_session

PORT = 4840
FUNCTION_STAGES = ("udp_sendmsg", "udp_send_skb", "ip_send_skb", "ip_output", "dev_xmit")
RX_FUNCTION_STAGES = ("udp_rcv", "udp_queue", "udp_recvmsg")
# a datagram on an idle veth, in the order it meets them
PIPELINE = ("syscall", "udp_sendmsg", "udp_send_skb", "ip_send_skb", "ip_output", "dev_queue",
            "dev_xmit", "xmit_start", "xmit_done")
# ... and on into the peer's receive path (--e2e), up to the reader's recvfrom return
E2E_PIPELINE = (*PIPELINE[:-1], "rx_handoff", "rx_stack", "udp_rcv", "udp_queue", "sock_queue",
                "udp_recvmsg", "rx_read", "rx_done")


def require(feature: str) -> None:
    probe = getattr(kernel_features.detect(), feature)
    if not probe.ok:
        pytest.skip(f"this kernel refuses {feature} ({probe.detail}); tests/test_vm.py runs "
                    "this test on Debian's 6.1 kernel")


def require_function_hooks() -> None:
    features = kernel_features.detect()
    if not (features.fentry.ok or features.kprobe.ok):
        require("fentry")


def udp_socket(net: VethPair, family: int = socket.AF_INET) -> socket.socket:
    with inside(net.ns_a):
        s = socket.socket(family, socket.SOCK_DGRAM)
    s.sendto(b"arp", (net.addr_b if family == socket.AF_INET else net.addr6_b, PORT))
    time.sleep(0.01)  # the neighbour resolved: every traced datagram takes the same path
    return s


def times(recs: np.ndarray, layout, names: tuple[str, ...]) -> np.ndarray:
    return recs["ts"][:, [layout.stage_index(n) for n in names]].astype(np.int64)


def function_hook_kinds(session: trace_session.TraceSession,
                        stages: tuple[str, ...] = FUNCTION_STAGES) -> set[str]:
    return {str(h.kind) for p in session.plans if p.stage.name in stages for h in p.hooks}


def assert_in_pipeline_order(recs: np.ndarray, layout, pipeline: tuple[str, ...] = PIPELINE
                             ) -> None:
    ts = times(recs, layout, pipeline)
    missing = [pipeline[i] for i in np.flatnonzero((ts == 0).any(axis=0))]
    assert not missing, f"stages never reached: {missing}"
    assert (np.diff(ts, axis=1) >= 0).all()


def test_where_fentry_and_kprobes_are_refused_the_stages_are_unavailable_and_unloaded(
        net: VethPair) -> None:
    features = kernel_features.detect()
    if features.fentry.ok or features.kprobe.ok:
        pytest.skip("this kernel allows fentry or kprobes")
    check = subprocess.run(udptrace("check", "--json"), capture_output=True, text=True,
                           timeout=120)
    stages = json.loads(check.stdout)["stages"]
    for name in FUNCTION_STAGES + RX_FUNCTION_STAGES:
        assert not stages[name]["available"] and not stages[name]["core"], name
        reasons = " ".join(stages[name]["unavailable"].values())
        assert "fentry refused" in reasons and "kprobes refused" in reasons, name
    s = udp_socket(net)
    with inside(net.ns_b):
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind((net.addr_b, PORT))
    listener.settimeout(2)
    # --e2e: the receive path's programs are loaded too, and none of its function stages'
    with tracing(pids=(os.getpid(),), e2e=True) as (session, batches):
        ours = [p.name for p in bpf_programs.of_process(os.getpid())]
        for _ in range(20):
            s.sendto(b"x", (net.addr_b, PORT))
            listener.recvfrom(10)
    assert "ut_btf_sock_read" in ours
    assert not [n for n in ours if n.startswith(("ut_fentry", "ut_kprobe"))]
    recs = records(batches)
    assert len(recs) == 20 and (times(recs, session.layout, ("rx_done",)) > 0).all()
    assert (times(recs, session.layout, FUNCTION_STAGES + RX_FUNCTION_STAGES) == 0).all()


def test_a_function_inlined_or_missing_leaves_only_its_own_stage_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # as a kernel would look where udp_send_skb is inlined everywhere and ftrace cannot patch
    # ip_send_skb: the plan alone, so this runs on any kernel
    allowed = dataclasses.replace(kernel_features.detect(),
                                  fentry=kernel_features.Probe(True, "allowed for the test"),
                                  kprobe=kernel_features.Probe(True, "allowed for the test"))
    functions = symbols.text_symbols() - {"udp_send_skb", "udp_v6_send_skb"}
    monkeypatch.setattr(symbols, "text_symbols", lambda: functions)
    monkeypatch.setattr(symbols, "ftrace_functions", lambda: functions - {"ip_send_skb"})
    plans = {p.stage.name: p for p in plan_stages(allowed, Btf.vmlinux(), tracefs())}
    assert not plans["udp_send_skb"].available
    assert "inlined or absent" in plans["udp_send_skb"].describe()
    assert {str(h) for h in plans["ip_send_skb"].hooks} == {"kprobe:ip_send_skb",
                                                           "fentry:ip6_send_skb"}
    for name in ("udp_sendmsg", "ip_output", "dev_xmit"):
        assert {str(h.kind) for h in plans[name].hooks} == {"fentry"}, name
    assert all(plans[name].available for name in ("syscall", "dev_queue", "xmit_start"))


@pytest.mark.parametrize(("function", "stage", "prototype"), [
    ("ip_send_skb", "ip_send_skb", "int ip_send_skb(struct net *net, struct sk_buff *skb)"),
    ("__udp_enqueue_schedule_skb", "udp_queue",
     "int __udp_enqueue_schedule_skb(struct sock *sk, struct sk_buff *skb)"),
])
def test_list_names_the_stage_a_function_serves_and_how_it_can_be_hooked_here(
        function: str, stage: str, prototype: str) -> None:
    result = subprocess.run(udptrace("list", function), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    features = kernel_features.detect()
    kinds = [k for k in ("fentry", "kprobe") if getattr(features, k).ok]
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"function:{function}") and f"stage {stage}" in first
    assert (f"usable: {', '.join(kinds)}" if kinds else "not usable here") in first
    assert prototype in result.stdout


@pytest.mark.vm
def test_a_stage_whose_function_is_missing_is_left_out_and_the_rest_traced(
        net: VethPair, monkeypatch: pytest.MonkeyPatch) -> None:
    require_function_hooks()
    functions = symbols.text_symbols() - {"udp_send_skb", "udp_v6_send_skb"}
    monkeypatch.setattr(symbols, "text_symbols", lambda: functions)
    s = udp_socket(net)
    with tracing(pids=(os.getpid(),)) as (session, batches):
        for _ in range(20):
            s.sendto(b"x", (net.addr_b, PORT))
    recs = records(batches)
    assert len(recs) == 20
    assert (times(recs, session.layout, ("udp_send_skb",)) == 0).all()
    rest = tuple(n for n in PIPELINE if n != "udp_send_skb")
    ts = times(recs, session.layout, rest)
    assert (ts > 0).all() and (np.diff(ts, axis=1) >= 0).all()


@pytest.mark.vm
def test_each_datagram_has_its_own_function_times_and_fragments_share_their_datagrams(
        net: VethPair) -> None:
    require_function_hooks()
    s, _listener = connected_to_listener(net, PORT)
    with tracing(pids=(os.getpid(),)) as (session, batches):
        assert sendmmsg(s, [b"a" * 10, b"b" * 20, b"c" * 30, b"d" * 40]) == 4
        s.send(b"f" * 4000)
    layout = session.layout
    recs = records(batches)
    assert len(recs) == 7 and len(set(recs["syscall_id"])) == 2
    assert_in_pipeline_order(recs, layout)
    fragment = (recs["flags"] & layout.flags["fragment"]) != 0
    batch = recs[~fragment][np.argsort(recs[~fragment]["packet_index"])]
    assert len(batch) == 4 and len(set(batch["syscall_id"])) == 1
    ts = times(batch, layout, ("udp_sendmsg", "ip_output", "xmit_done"))
    # datagram n+1 entered udp_sendmsg after datagram n left the device
    assert (ts[1:, 0] > ts[:-1, 2]).all()
    fragments = recs[fragment]
    assert len(fragments) == 3
    shared = times(fragments, layout, ("udp_sendmsg", "udp_send_skb", "ip_send_skb"))
    assert (shared == shared[0]).all()  # one datagram: one pass through UDP
    output = np.sort(times(fragments, layout, ("ip_output",))[:, 0])
    assert (output > shared[0, 2]).all() and len(set(output)) == 3  # IP output per fragment


@pytest.mark.vm
def test_a_packet_held_by_a_qdisc_leaves_it_at_dev_xmit(net: VethPair) -> None:
    require_function_hooks()
    subprocess.run(["ip", "netns", "exec", net.ns_a, "tc", "qdisc", "add", "dev", net.if_a,
                    "root", "tbf", "rate", "8mbit", "burst", "2000", "limit", "100000"],
                   check=True)
    s = udp_socket(net)
    with tracing(pids=(os.getpid(),)) as (session, batches):
        for _ in range(10):
            s.sendto(b"x" * 1000, (net.addr_b, PORT))
        time.sleep(0.1)
    recs = records(batches)
    held = recs[recs["ts"][:, session.layout.stage_index("qdisc_dequeue")] > 0]
    assert len(held) >= 8
    ts = times(held, session.layout, ("qdisc_enqueue", "qdisc_dequeue", "dev_xmit",
                                      "xmit_start"))
    assert (ts > 0).all() and (np.diff(ts, axis=1) >= 0).all()


LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(60)
print("bound", flush=True)
for _ in range(int(sys.argv[3])):
    s.recvfrom(100)
"""


@pytest.mark.vm
def test_trace_reports_a_row_per_function_stage_in_pipeline_order() -> None:
    require_function_hooks()
    with VethPair() as net:
        listener = net.popen(net.ns_b, [sys.executable, "-c", LISTENER, net.addr_b, str(PORT),
                                        "50"], stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None and listener.stdout.readline() == "bound\n"
        tracer = start_tracer("--netns", net.ns_a, "--e2e", "-d", "120", "--no-hist")
        send_from(net, 50, 0.002).wait(timeout=60)
        listener.wait(timeout=60)
        time.sleep(0.5)
        tracer.send_signal(signal.SIGINT)  # sooner than -d: a sender takes seconds in a VM
        report, err = tracer.communicate(timeout=60)
    assert tracer.returncode == 0, err
    table = report[report.index("latency per stage"):].splitlines()
    rows = [line.split()[1] for line in table if line.startswith("│")]
    shown = [name for name in rows if name in E2E_PIPELINE]
    assert shown == list(E2E_PIPELINE[1:]), rows
    assert "stages not traced on this kernel" not in report
    assert "50 received" in report


def blocked_in_recv(thread: threading.Thread) -> bool:
    """The thread sleeps (in its recvfrom): bounded wait, the VM's emulated CPU is slow."""
    stat = Path(f"/proc/self/task/{thread.native_id}/stat")
    for _ in range(100):
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "S":
            return True
        time.sleep(0.05)
    return False


@pytest.mark.vm
@pytest.mark.parametrize("kind", ["fentry", "kprobe"])
def test_function_stages_split_the_send_and_receive_paths_in_pipeline_order(
        net: VethPair, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    require(kind)
    if kind == "kprobe":
        refused = dataclasses.replace(kernel_features.detect(),
                                      fentry=kernel_features.Probe(False, "refused for the test"))
        monkeypatch.setattr(trace_attach, "detect", lambda: refused)
    tx, tx6 = udp_socket(net), udp_socket(net, socket.AF_INET6)
    readers = []
    for family, address in ((socket.AF_INET, net.addr_b), (socket.AF_INET6, net.addr6_b)):
        with inside(net.ns_b):  # after udp_socket's first datagrams: nothing queued before
            reader = socket.socket(family, socket.SOCK_DGRAM)
            reader.bind((address, PORT))
        # blocking in the kernel, bounded there: Python's own timeout would wait in poll()
        # and enter udp_recvmsg only once woken
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
        readers.append(reader)
    late = 0.05
    with tracing(pids=(os.getpid(),), e2e=True) as (session, batches):
        for i in range(40):
            tx.sendto(b"late %d" % i, (net.addr_b, PORT))
        for i in range(10):  # udpv6_rcv, udpv6_recvmsg
            tx6.sendto(b"six %d" % i, (net.addr6_b, PORT))
        time.sleep(late)
        for reader, count in zip(readers, (40, 10), strict=True):
            for _ in range(count):
                reader.recvfrom(100)
        waiting = threading.Thread(target=readers[0].recvfrom, args=(100,))
        waiting.start()
        assert blocked_in_recv(waiting)
        tx.sendto(b"awaited", (net.addr_b, PORT))
        waiting.join(timeout=10)
    assert function_hook_kinds(session, FUNCTION_STAGES + RX_FUNCTION_STAGES) == {kind}
    recs = records(batches)
    layout = session.layout
    assert len(recs) == 51
    assert {layout.fates[int(f)] for f in recs["fate"]} == {"received"}
    assert (recs["family"] == socket.AF_INET6).sum() == 10
    assert_in_pipeline_order(recs, layout, E2E_PIPELINE)
    order = np.argsort(times(recs, layout, ("syscall",))[:, 0])
    queued, came, read = times(recs[order], layout, ("sock_queue", "udp_recvmsg", "rx_read")).T
    # a late reader: the socket-queue wait is udp_recvmsg's row, not rx_read's
    assert (came[:-1] - queued[:-1] >= late * 1e9).all()
    # a reader already waiting came for it the moment it was queued
    assert came[-1] == queued[-1] and read[-1] > came[-1]
