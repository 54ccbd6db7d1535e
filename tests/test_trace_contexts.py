"""Where the kernel ran a packet's steps: the driver called directly by the sender or from the
NET_TX softirq (with how long that softirq was pending), and where a TX completion ran."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import bpf_programs
import numpy as np
import pytest
from conftest import (
    connected_to_listener,
    receive,
    records,
    send_from,
    start_tracer,
    tracing,
)
from test_trace_send_path import sendmmsg

from udptrace.kernel.features import detect
from udptrace.netns import VethPair, inside
from udptrace.trace.threads import StepThread, title

PORT = 4840


def udp_socket(net: VethPair) -> socket.socket:
    with inside(net.ns_a):
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def contexts(recs: np.ndarray, layout, field: str) -> list[str]:
    return [layout.contexts[c] for c in recs[field]]


@pytest.mark.vm
def test_a_datagram_on_an_idle_veth_is_transmitted_directly_by_its_sender(net: VethPair) -> None:
    s = udp_socket(net)
    s.sendto(b"arp", (net.addr_b, PORT))  # resolve the neighbour before tracing
    with tracing(pids=(os.getpid(),)) as (session, batches):
        for _ in range(50):
            s.sendto(b"x" * 64, (net.addr_b, PORT))
        time.sleep(0.05)
        snap = session.snapshot()
    recs = records(batches)
    assert len(recs) == 50
    assert set(contexts(recs, session.layout, "xmit_context")) == {"sender"}
    assert (recs["softirq_pending_ns"] == 0).all()
    # a veth hands the packet on: there is no TX completion
    assert set(contexts(recs, session.layout, "completion_context")) == {"unknown"}
    assert snap.xmit_contexts == {"sender": 50} and snap.completion_contexts == {}
    if detect().preempt_rt.ok:  # the sender's own thread, with its scheduling
        assert snap.threads == (StepThread("xmit", "sender", threading.get_native_id(), 0, 0,
                                           50),)
        assert set(recs["xmit_thread"]["tid"]) == {threading.get_native_id()}
    else:
        assert snap.threads == () and (recs["xmit_thread"]["tid"] == 0).all()


@pytest.mark.vm
def test_packets_a_shaper_held_leave_from_the_net_tx_softirq_after_a_measured_wait(
        net: VethPair) -> None:
    # tbf at 1 Mbit/s lets the first datagram through and holds the rest (one sendmmsg
    # enqueues them faster than that even in an emulated VM); its watchdog raises NET_TX
    # when the next one may leave, and NET_TX hands it to the driver
    net.run(net.ns_a, ["tc", "qdisc", "add", "dev", net.if_a, "root", "tbf", "rate", "1mbit",
                       "burst", "2000", "limit", "100000"]).check_returncode()
    # no IPv6 on it: any packet another thread sends on it while tbf holds ours runs the
    # qdisc and may send one of ours ("task": once in about 15 rt-guest runs, 2026-12-05),
    # and a fresh interface's MLD reports leave from a kworker
    net.run(net.ns_a, ["sysctl", "-qw",
                       f"net.ipv6.conf.{net.if_a}.disable_ipv6=1"]).check_returncode()
    s, listener = connected_to_listener(net, PORT)
    s.send(b"arp")
    assert receive(listener, 1) == 1
    with tracing(pids=(os.getpid(),)) as (session, batches):
        assert sendmmsg(s, [b"x" * 1000] * 20) == 20
        # 20 datagrams of 8.3 ms each at 1 Mbit/s; a slow machine's last one may leave
        # the shaper after any fixed wait, so wait for them to arrive
        assert receive(listener, 20) == 20
        snap = session.snapshot()
    recs = records(batches)
    layout = session.layout
    assert len(recs) == 20
    where = np.array(contexts(recs, layout, "xmit_context"))
    held = where == "net_tx"
    assert held.sum() >= 10, where
    # the sender itself transmits what the shaper lets through while it is enqueueing
    assert set(where[~held]) <= {"sender"}, (where.tolist(), snap.threads)
    pending = recs["softirq_pending_ns"][held].astype(np.int64)
    assert (pending > 0).all() and (pending < 1_000_000_000).all()
    assert (recs["softirq_pending_ns"][~held] == 0).all()
    assert snap.xmit_contexts["net_tx"] == held.sum()
    assert snap.net_tx_pending["count"] == held.sum()
    assert snap.net_tx_pending["max"] == pending.max()
    if not detect().preempt_rt.ok:
        return
    # PREEMPT_RT: NET_TX ran in a kernel thread (ksoftirqd/N, or the thread the watchdog's
    # timer ran in), named with its pid and scheduling; the counts per thread add up
    ran = [t for t in snap.threads if t.step == "xmit" and t.context == "net_tx"]
    assert ran and sum(t.packets for t in ran) == held.sum(), snap.threads
    tids = set(recs["xmit_thread"]["tid"][held].tolist())
    assert tids == {t.tid for t in ran} and os.getpid() not in tids
    for t in ran:
        assert t.title.startswith(("ksoftirqd/", "ktimers/", "irq/")), t.title
        assert Path(f"/proc/{t.tid}/stat").read_text().split()[3] == "2"  # kthreadd's child


@pytest.mark.vm
def test_a_device_with_tx_completion_records_where_it_ran(net: VethPair) -> None:
    # dummy frees each packet in its transmit function: a completion in the sender's thread
    add = subprocess.run(["ip", "-n", net.ns_a, "link", "add", "ut_dummy", "type", "dummy"],
                         capture_output=True, text=True, check=False)
    if add.returncode:
        pytest.skip(f"no dummy devices in this kernel: {add.stderr.strip()}")
    for args in (("addr", "add", "10.214.0.1/24", "dev", "ut_dummy"),
                 ("link", "set", "ut_dummy", "up")):
        subprocess.run(["ip", "-n", net.ns_a, *args], check=True)
    s = udp_socket(net)
    with tracing(pids=(os.getpid(),)) as (session, batches):
        for _ in range(20):
            s.sendto(b"x" * 64, ("10.214.0.2", PORT))
        time.sleep(0.05)
        snap = session.snapshot()
    recs = records(batches)
    layout = session.layout
    assert len(recs) == 20 and (recs["fate"] == layout.fates_by_name["sent"]).all()
    assert (recs["ts"][:, layout.stage_index("free")] > 0).all()
    assert set(contexts(recs, layout, "completion_context")) == {"sender"}
    assert snap.completion_contexts == {"sender": 20}


def test_json_events_and_the_report_say_where_the_driver_ran(tmp_path: Path) -> None:
    with VethPair() as net:
        udp_socket(net).sendto(b"arp", (net.addr_b, PORT))  # no traced datagram waits for it
        time.sleep(0.05)
        out = tmp_path / "packets.jsonl"
        tracer = start_tracer("--netns", net.ns_a, "-d", "120", "--no-hist", "--events",
                              "--json", str(out))
        send_from(net, 20, 0.002).wait(timeout=60)
        time.sleep(0.5)
        tracer.send_signal(signal.SIGINT)
        report, err = tracer.communicate(timeout=60)
    assert tracer.returncode == 0, err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    packets, summary = lines[:-1], lines[-1]
    assert len(packets) == 20
    for packet in packets:
        assert packet["xmit_context"] == "sender"
        assert packet["softirq_pending_ns"] is None and packet["completion_context"] is None
    assert summary["contexts"] == {"xmit": {"sender": 20}, "completion": {},
                                   "softirq_pending_ns": None}
    events = [line for line in report.splitlines() if " → " in line]
    assert len(events) == 20 and all("xmit: sender" in line for line in events)
    assert "where it ran" in report
    assert re.search(r"the sending thread \(direct\) +│ +20 │ +│", report), report


def test_without_contexts_no_softirq_hook_is_loaded_and_records_say_unknown(
        net: VethPair) -> None:
    s = udp_socket(net)
    with tracing(pids=(os.getpid(),), contexts=False) as (session, batches):
        ours = [p.name for p in bpf_programs.of_process(os.getpid())]
        for _ in range(10):
            s.sendto(b"x", (net.addr_b, PORT))
        time.sleep(0.05)
        snap = session.snapshot()
    assert ours and not [n for n in ours if "softirq" in n]
    recs = records(batches)
    assert len(recs) == 10
    assert set(contexts(recs, session.layout, "xmit_context")) == {"unknown"}
    assert snap.xmit_contexts == {} and snap.completion_contexts == {}


def test_a_steps_thread_is_named_with_its_pid_and_scheduling() -> None:
    me = Path("/proc/self/comm").read_text().strip()
    assert title(os.getpid(), 1, 50) == f"{me} (pid {os.getpid()}, FIFO 50)"
    assert title(os.getpid(), 0, 0) == f"{me} (pid {os.getpid()}, OTHER)"
    thread = StepThread("xmit", "net_tx", os.getpid(), 2, 10, 3)
    assert thread.as_dict() == {"step": "xmit", "context": "net_tx", "thread": me,
                                "tid": os.getpid(), "policy": "RR", "rt_priority": 10,
                                "packets": 3}
