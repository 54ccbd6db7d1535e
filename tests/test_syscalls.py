"""`udptrace syscalls`: every syscall of a real process, like `perf trace -p`.

The traced processes are small Python programs in a namespace of the `net` fixture that
wait for a line on stdin, so tracing is attached before they make the calls we count.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import udptrace

from udptrace.kernel import features as kernel_features
from udptrace.netns import VethPair
from udptrace.trace import syscalls as trace_syscalls
from udptrace.trace.syscalls import SyscallOptions, SyscallSession, follow

PORT = 4840
SIZE = 77

SENDER = """
import socket, sys
count, size, port, address, address6 = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                         sys.argv[4], sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sys.stdin.readline()
for _ in range(count):
    s.sendto(b"u" * size, (address, port))
s.setblocking(False)
try:
    s.recvfrom(100)  # nothing to read: EAGAIN
except BlockingIOError:
    pass
s6.sendmsg([b"v" * size], [], socket.MSG_DONTWAIT, (address6, port))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.connect((address, port))
c.send(b"w" * size)  # a sendto without an address
"""

CHATTY = """
import os, sys
sys.stdin.readline()
for _ in range(int(sys.argv[1])):
    os.getppid()
"""

END_LINE = re.compile(r"(\d+) syscalls, the process ended(?:; (\d+) shown, (\d+) lost)?")


def start_waiting(net: VethPair, script: str, *args: object) -> subprocess.Popen:
    """A Python process in namespace a that runs `script` once it reads a line."""
    return net.popen(net.ns_a, [sys.executable, "-c", script, *map(str, args)],
                     stdin=subprocess.PIPE, text=True)


def start_sender(net: VethPair, count: int) -> subprocess.Popen:
    return start_waiting(net, SENDER, count, SIZE, PORT, net.addr_b, net.addr6_b)


def go(process: subprocess.Popen) -> None:
    assert process.stdin is not None
    process.stdin.write("go\n")
    process.stdin.close()


def trace_until_exit(process: subprocess.Popen, *args: str) -> tuple[str, str, float]:
    """`udptrace syscalls -p` on the process, let it run, and wait for udptrace to end by
    itself; returns its stdout, its stderr and how long it took after the process ended."""
    tracer = subprocess.Popen(udptrace("syscalls", "-p", str(process.pid), *args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert tracer.stderr is not None
        header = tracer.stderr.readline()
        assert header.startswith("tracing syscalls of pid"), header + tracer.stderr.read()
        go(process)
        assert process.wait(timeout=30) == 0
        ended = time.monotonic()
        out, err = tracer.communicate(timeout=30)  # no -d: it must end with the process
    finally:
        if tracer.poll() is None:
            tracer.kill()
            tracer.wait()
    assert tracer.returncode == 0, err
    return out, err, time.monotonic() - ended


def test_live_lines_show_each_sendto_with_its_socket_length_and_destination(
        net: VethPair) -> None:
    count = 20
    out, err, _ = trace_until_exit(start_sender(net, count))
    sends = [line for line in out.splitlines() if " sendto(" in line]
    assert len(sends) == count + 1, out
    for line in sends[:count]:
        # the fd's unconnected socket (bound by the first send), the address in the call
        assert re.search(r"<INET/DGRAM 0\.0\.0\.0:[1-9]\d*>", line), line
        assert f"len: {SIZE}, flags: 0, addr: {net.addr_b}:{PORT}) = {SIZE}" in line, line
        start, duration = re.match(r"\s*([\d.]+) \(\s*([\d.]+) ms\): \d+ sendto", line).groups()
        assert float(start) >= 0 and float(duration) > 0
    assert re.search(rf"<INET/DGRAM {net.addr_a}:[1-9]\d* → {net.addr_b}:{PORT}>, "
                     rf"len: {SIZE}, flags: 0\) = {SIZE}$", sends[-1]), sends[-1]
    recv = [line for line in out.splitlines() if " recvfrom(" in line]
    assert len(recv) == 1 and recv[0].endswith("= -11 EAGAIN"), out
    sendmsg = [line for line in out.splitlines() if " sendmsg(" in line]
    assert len(sendmsg) == 1, out
    assert ("INET6/DGRAM [::]:" in sendmsg[0] and "flags: MSG_DONTWAIT, "
            f"addr: [{net.addr6_b}]:{PORT}) = {SIZE}" in sendmsg[0]), sendmsg[0]
    # the process's last call never returns; it is shown as perf trace shows it
    assert out.splitlines()[-1].endswith("exit_group() = ?"), out
    assert END_LINE.search(err) and " 0 lost" in err, err


def test_summary_counts_every_sendto_exactly(net: VethPair) -> None:
    count = 500
    out, err, _ = trace_until_exit(start_sender(net, count), "--summary")
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 8:
            rows[cells[0]] = cells
    assert rows["sendto"][1:3] == [str(count + 1), "0"], out
    assert rows["recvfrom"][1:3] == ["1", "1"], out
    assert rows["sendmsg"][1:3] == ["1", "0"], out
    total = sum(int(cells[1]) for name, cells in rows.items() if name != "syscall")
    assert END_LINE.search(err) and f" {total} syscalls" in err, (out, err)


def test_the_command_ends_by_itself_when_the_process_exits(net: VethPair) -> None:
    sleeper = start_waiting(net, "import sys, time; sys.stdin.readline(); time.sleep(0.5)")
    out, err, after = trace_until_exit(sleeper)
    assert after < 5, f"udptrace ended {after:.1f} s after the process"
    assert "clock_nanosleep() = 0" in out and "the process ended" in err, (out, err)


def test_lost_records_are_counted_and_shown(net: VethPair) -> None:
    calls = 5000
    # one page of ring buffer holds a few dozen records; the burst overflows it
    out, err, _ = trace_until_exit(start_waiting(net, CHATTY, calls), "--ringbuf-kb", "4")
    counted, shown, lost = map(int, END_LINE.search(err).groups())
    lines = [line for line in out.splitlines() if not line.endswith("= ?")]
    assert len(lines) == shown
    assert lost > 0 and shown + lost == counted >= calls, err
    assert "raise --ringbuf-kb" in err


def test_ctrl_c_ends_with_the_summary(net: VethPair) -> None:
    sleeper = start_waiting(net, "import sys, time; sys.stdin.readline(); time.sleep(60)")
    tracer = subprocess.Popen(udptrace("syscalls", "-p", str(sleeper.pid), "--summary"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert tracer.stderr is not None
        assert tracer.stderr.readline().startswith("tracing syscalls")
        go(sleeper)
        time.sleep(0.5)
        tracer.send_signal(signal.SIGINT)
        out, err = tracer.communicate(timeout=30)
    finally:
        for process in (tracer, sleeper):
            process.kill()
            process.wait()
    assert tracer.returncode == 0, err
    assert "syscalls of pid" in out and "stopped after" in err, (out, err)


def run_syscalls(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(udptrace("syscalls", *args), capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("args", "text"), [
    (("-p", "4194000"), "no process with pid 4194000"),
    (("-p", "0"), "no process with pid 0"),
    (("-p", "1", "--ringbuf-kb", "3"), "power of two"),
])
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], text: str) -> None:
    result = run_syscalls(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr


def test_not_root_is_one_line_and_exit_2() -> None:
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             *udptrace("syscalls", "-p", "1", "-d", "1")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "root" in result.stderr, result.stderr


def test_a_thread_id_names_its_process_in_one_line() -> None:
    done = threading.Event()
    thread = threading.Thread(target=done.wait)
    thread.start()
    try:
        result = run_syscalls("-p", str(thread.native_id), "-d", "1")
    finally:
        done.set()
        thread.join()
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "thread of process" in result.stderr


@pytest.mark.parametrize("kind", ["tp_btf", "raw_tp", "tracepoint"])
def test_every_hook_kind_reads_the_arguments(net: VethPair, monkeypatch: pytest.MonkeyPatch,
                                             kind: str) -> None:
    # refuse the better kinds, as a kernel without them would: the next one must serve
    better = ["tp_btf", "raw_tp", "tracepoint"][:["tp_btf", "raw_tp", "tracepoint"].index(kind)]
    refused = dataclasses.replace(kernel_features.detect(), **{
        k: kernel_features.Probe(False, "refused for the test") for k in better})
    monkeypatch.setattr(trace_syscalls, "detect", lambda: refused)
    count = 30
    sender = start_sender(net, count)
    batches: list[np.ndarray] = []
    try:
        with SyscallSession(SyscallOptions(sender.pid)) as session:
            assert {str(h.kind) for h in session.plan.hooks} == {kind}
            go(sender)
            result = follow(session, 30, threading.Event(), batches.append)
    finally:
        sender.kill()
        sender.wait()
    assert result.process_ended
    records = np.concatenate(batches)
    sendto = next(nr for nr, name in session.table.names.items() if name == "sendto")
    sends = records[records["nr"] == sendto]
    assert len(sends) == count + 1 == result.counts[sendto].hist["count"]
    sends = sends[:count]  # the last is the connected socket's, without an address
    destination = ipaddress.IPv6Address(f"::ffff:{net.addr_b}").packed
    assert (sends["call_family"] == socket.AF_INET).all() and (sends["call_port"] == PORT).all()
    assert all(bytes(a) == destination for a in sends["call_addr"])
    assert (sends["args"][:, 2] == SIZE).all() and (sends["ret"] == SIZE).all()
    assert (sends["sock_family"] == socket.AF_INET).all()
    assert (sends["sock_type"] == socket.SOCK_DGRAM).all()


def test_check_names_the_hooks_of_the_syscall_view() -> None:
    result = subprocess.run(udptrace("check", "--json"), capture_output=True, text=True,
                            timeout=120)
    view = json.loads(result.stdout)["syscall_view"]
    # this machine allows tp_btf: the best hook for both edges
    assert view == {"available": True, "hooks": ["tp_btf:sys_enter", "tp_btf:sys_exit"]}
