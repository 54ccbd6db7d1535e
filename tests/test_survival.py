"""What happens when things break: signals, two tracers, a full ring, a stuck output, a full disk,
a closed pipe."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import bpf_programs
import pytest
from conftest import send_from, start_tracer, udptrace

from udptrace import bpf
from udptrace.loader import ringbuf
from udptrace.loader.bpf_object import BpfObject
from udptrace.netns import VethPair
from udptrace.trace import drain, run
from udptrace.trace.decode import Packets
from udptrace.trace.layout import Layout
from udptrace.trace.options import TraceOptions
from udptrace.trace.session import TraceSession


def summary_of(path: Path) -> dict:
    last = path.read_text().strip().splitlines()[-1]
    obj = json.loads(last)
    assert obj["type"] == "summary"
    return obj


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_killed_tracer_leaves_nothing_attached(net: VethPair, sig: signal.Signals,
                                                 tmp_path: Path) -> None:
    tracer = start_tracer("--netns", net.ns_a, "--json", str(tmp_path / "out.jsonl"))
    sender = send_from(net, 200, 0.001)
    out = tmp_path / "out.jsonl"
    deadline = time.monotonic() + 10
    while not (out.exists() and out.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.02)  # a loaded machine starts the sender late: wait for its first record
    ours = bpf_programs.held_by(tracer.pid)
    assert len(ours) >= 10  # the tracer really holds its programs while it runs
    tracer.send_signal(sig)
    _out, err = tracer.communicate(timeout=30)
    sender.wait(timeout=30)
    assert not ours & set(bpf_programs.loaded()), "programs of the ended tracer are still loaded"
    if sig != signal.SIGKILL:
        assert tracer.returncode == 0, err
        assert summary_of(tmp_path / "out.jsonl")["counters"]["packets"] > 0


def test_two_tracers_at_once_each_see_every_datagram(net: VethPair, tmp_path: Path) -> None:
    outputs = [tmp_path / "one.jsonl", tmp_path / "two.jsonl"]
    tracers = [start_tracer("--netns", net.ns_a, "-d", "4", "--json", str(p)) for p in outputs]
    send_from(net, 500, 0.001).wait(timeout=30)
    for tracer in tracers:
        tracer.communicate(timeout=30)
        assert tracer.returncode == 0
    for path in outputs:
        lines = path.read_text().splitlines()
        packets = [json.loads(line) for line in lines if '"type":"packet"' in line]
        assert len(packets) == 500
        summary = summary_of(path)
        assert summary["counters"]["sent"] == 500
        # nobody listens in the peer namespace: each datagram dies there, after leaving ours
        assert summary["drops"] == [
            {"reason": "NO_SOCKET", "after_stage": "rx_handoff", "packets": 500}]
        # the ring held some records at a read, and never all it could
        assert 0 < summary["ringbuf"]["peak_bytes"] < summary["ringbuf"]["bytes"] == 8 << 20


def test_a_ring_buffer_too_small_reports_lost_records_and_the_totals_add_up(
        net: VethPair, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    tracer = start_tracer("--netns", net.ns_a, "-d", "3", "--ringbuf-kb", "4", "--json", str(out))
    send_from(net, 3000).wait(timeout=60)  # a burst at full speed into a one-page ring
    report, _ = tracer.communicate(timeout=30)
    summary = summary_of(out)
    counters = summary["counters"]
    assert counters["lost"] > 0
    assert counters["packets"] == 3000
    assert summary["records"] + counters["lost"] == counters["sent"] + counters["dropped"]
    assert "records were lost" in report
    # a full ring: no room was left for one more record (a send-only record with its header)
    with BpfObject(bpf.object_bytes("ut_trace"), "ut_trace") as obj:
        stride = ringbuf.stride(Layout.from_object(obj).record_bytes(payload=False,
                                                                     receive=False))
    ring = summary["ringbuf"]
    assert ring["bytes"] - stride < ring["peak_bytes"] <= ring["bytes"] == 4096, (ring, stride)
    assert "ring buffer peak 4 of 4 KiB" in report


def test_a_stuck_output_fills_the_ring_not_memory_and_the_loss_is_counted(net: VethPair) -> None:
    # 3.5 MB of records (one per datagram on a veth), more than the drain may hold (1.5 MB),
    # at a pace it keeps up with when it reads
    ring_bytes, count = 256 << 10, 10_000
    session = TraceSession(TraceOptions(netns=net.ns_a, stream=True, ringbuf_bytes=ring_bytes))
    sender = send_from(net, count, 0.0002)
    stop = threading.Event()
    stuck = []

    def on_packets(packets: Packets) -> None:
        if not stuck:  # the first batch's output blocks until every datagram was sent
            stuck.append(len(packets))
            sender.wait(timeout=60)
            threading.Timer(1.0, stop.set).start()

    try:
        result = run.run(session, 60, stop, on_packets)
    finally:
        sender.kill()
        sender.wait()
        session.close()
    counters = result.snapshot.counters
    assert counters["packets"] == count
    assert counters["lost"] > 0 and result.records + counters["lost"] == count
    # a few rings' worth was held in memory while the output was stuck, the rest was lost
    held = (drain.QUEUED_RINGS + 2) * ring_bytes // session.record_bytes
    assert 0 < result.records <= held + stuck[0], (result.records, held)


def test_json_to_a_full_disk_ends_with_a_clear_message_and_the_summary(
        net: VethPair, tmp_path: Path) -> None:
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        tracer = start_tracer("--netns", net.ns_a, "-d", "20", "--json", str(mount / "o.jsonl"))
        sender = send_from(net, 2000, 0.0005)
        report, _ = tracer.communicate(timeout=60)
        sender.kill()
        sender.wait()
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert tracer.returncode == 1
    assert "no space left on device" in report
    assert "latency per stage" in report  # the summary is still printed


def test_json_to_a_closed_pipe_ends_with_a_clear_message(net: VethPair) -> None:
    tracer = subprocess.Popen(udptrace("trace", "--netns", net.ns_a, "-d", "20", "--json", "-"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert tracer.stderr is not None and tracer.stdout is not None
    assert tracer.stderr.readline().startswith("tracing UDP sends")
    sender = send_from(net, 2000, 0.0005)
    tracer.stdout.readline()
    tracer.stdout.close()  # the reader goes away, like `| head -1`
    err = tracer.stderr.read()
    tracer.wait(timeout=60)
    sender.kill()
    sender.wait()
    assert tracer.returncode == 1
    assert "output closed" in err
    assert "latency per stage" in err


def test_a_comm_with_no_process_warns_and_keeps_running() -> None:
    result = subprocess.run(udptrace("trace", "-c", "no-such-comm", "-d", "1"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "no process named 'no-such-comm'" in result.stderr
    assert "no UDP packets were followed" in result.stdout
