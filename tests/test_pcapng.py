"""pcapng for Wireshark: real datagrams between namespaces, recorded, written out, read by
tshark; their frames, times and fates as tshark sees them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import start_run, udptrace

from udptrace import bpf, cli
from udptrace.loader.bpf_object import BpfObject
from udptrace.netns import VethPair, inside
from udptrace.report import pcapng
from udptrace.report.columns import stage_column
from udptrace.stages import STAGE_NAMES
from udptrace.trace.layout import Layout
from udptrace.trace.options import SNAPLEN_MAX

pytestmark = pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed "
                                "(apt-get install tshark; setup.sh test does)")

OPEN_PORT, CLOSED_PORT = 4871, 4872  # a listener on the first, nobody on the second
READ, REFUSED = 12, 5
ETHERNET_IPV4_UDP = 14 + 20 + 8
ROOT_NOTICE = 'Running as user "root"'  # tshark's own line when run as root, not a warning


def payload(i: int) -> bytes:
    return b"pcapng datagram %03d " % i + bytes(range(i, i + 20))


def tshark(path: Path, *args: str) -> list[list[str]]:
    """tshark's fields per frame; fails on anything it says on stderr but the root notice."""
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-E", "separator=\t",
                          *args], capture_output=True, text=True, timeout=60)
    said = [line for line in out.stderr.splitlines() if not line.startswith(ROOT_NOTICE)]
    assert out.returncode == 0 and not said, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines()]


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out


def exchange(net: VethPair, count: int = READ, refused: int = REFUSED) -> None:
    """From this process: `count` datagrams read by a listener in b, then `refused` to a
    port nobody listens on there (each a NO_SOCKET drop on b's receive path)."""
    with inside(net.ns_b):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind((net.addr_b, OPEN_PORT))
    with inside(net.ns_a):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.settimeout(5)
    with rx, tx:
        for i in range(count):
            tx.sendto(payload(i), (net.addr_b, OPEN_PORT))
            assert rx.recvfrom(200)[0] == payload(i)
        for i in range(refused):
            tx.sendto(payload(100 + i), (net.addr_b, CLOSED_PORT))
        time.sleep(0.3)


@dataclass(frozen=True)
class Recorded:
    net_addrs: tuple[str, str]
    rows: list[dict]
    capture: Path
    wall: tuple[int, int]  # CLOCK_REALTIME ns around the sends


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    tmp = tmp_path_factory.mktemp("pcapng")
    run, capture = tmp / "run.parquet", tmp / "run.pcapng"
    with VethPair() as net:
        recorder = start_run("record", "-o", str(run), "--e2e", "-p", str(os.getpid()), "-d", "60")
        before = time.time_ns()
        exchange(net)
        after = time.time_ns()
        stop(recorder)
        addrs = (net.addr_a, net.addr_b)
    report = subprocess.run(udptrace("report", str(run), "--pcapng", str(capture), "--no-hist"),
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    yield Recorded(addrs, pq.read_table(run / "packets").to_pylist(), capture, (before, after))


def test_tshark_reads_every_record_as_a_frame_without_a_warning(recorded: Recorded) -> None:
    frames = tshark(recorded.capture, "-e", "frame.number", "-e", "frame.interface_name",
                    "-e", "frame.time_epoch")
    assert len(frames) == len(recorded.rows) == READ + REFUSED
    times = [float(t) for *_, t in frames]
    assert times == sorted(times)
    assert {name for _, name, _ in frames} == {r["ifname"] for r in recorded.rows}
    start_ns, end_ns = recorded.wall  # CLOCK_REALTIME, at the frame's device
    assert all(start_ns / 1e9 - 0.01 <= float(t) <= end_ns / 1e9 + 0.01 for *_, t in frames)


def test_ports_lengths_and_payload_bytes_are_what_was_sent(recorded: Recorded) -> None:
    frames = tshark(recorded.capture, "-e", "eth.type", "-e", "ip.src", "-e", "ip.dst",
                    "-e", "udp.dstport", "-e", "udp.length", "-e", "frame.len",
                    "-e", "frame.cap_len", "-e", "data.data")
    sent = [(OPEN_PORT, payload(i)) for i in range(READ)] + [
        (CLOSED_PORT, payload(100 + i)) for i in range(REFUSED)]
    seen = []
    for eth_type, src, dst, dport, udp_len, length, caplen, data in frames:
        assert eth_type == "0x0800" and (src, dst) == recorded.net_addrs
        body = bytes.fromhex(data)
        assert int(udp_len) == 8 + len(body)
        assert int(length) == int(caplen) == ETHERNET_IPV4_UDP + len(body)  # all within 128
        seen.append((int(dport), body))
    assert Counter(seen) == Counter(sent)


def comment_words(text: str) -> dict[str, str]:
    return dict(w.split("=", 1) for w in text.replace(" ;", "").split() if "=" in w)


def told(row: dict) -> tuple[str, frozenset[tuple[str, str]]]:
    """What a frame's comment must say of a record: its fate and every stage it reached."""
    return row["fate"], frozenset((s, str(row[stage_column(s)])) for s in STAGE_NAMES
                                  if row[stage_column(s)] is not None)


def test_each_frame_comment_carries_its_records_stage_times_and_fate(
        recorded: Recorded) -> None:
    comments = [row[0] for row in tshark(recorded.capture, "-e", "frame.comment")]
    said = []
    for text in comments:
        words = comment_words(text)
        assert text.startswith(f"udptrace pid={os.getpid()} comm=") and "stages_ns:" in text
        said.append((words["fate"],
                     frozenset((s, words[s]) for s in STAGE_NAMES if s in words)))
        if words["fate"] == "received":
            assert "e2e_ns" in words and "total_ns" in words and "receiver pid=" in text
        else:
            assert words["drop_reason"] == "NO_SOCKET" and words["drop_stage"] in STAGE_NAMES
    # frames come in time order, records in their ends': matched by what they say
    assert Counter(said) == Counter(told(row) for row in recorded.rows)
    assert all({"syscall", "dev_queue"} <= {s for s, _ in stages} for _, stages in said)
    assert Counter(fate for fate, _ in said) == {"received": READ, "dropped": REFUSED}


@pytest.mark.vm
def test_a_display_filter_on_the_comment_finds_the_no_socket_drops(recorded: Recorded) -> None:
    found = tshark(recorded.capture, "-Y", 'udp && frame.comment contains "drop_reason=NO_SOCKET"',
                   "-e", "udp.dstport")
    assert [port for (port,) in found] == [str(CLOSED_PORT)] * REFUSED


def test_trace_writes_pcapng_after_the_run(tmp_path: Path) -> None:
    capture = tmp_path / "live.pcapng"
    with VethPair() as net:
        tracer = start_run("trace", "--e2e", "-p", str(os.getpid()), "-d", "60",
                       "--pcapng", str(capture))
        exchange(net, count=3, refused=2)
        out = stop(tracer)
    assert f"pcapng for Wireshark: {capture}" in out
    fates = [comment_words(c)["fate"] for (c,) in tshark(capture, "-e", "frame.comment")]
    assert Counter(fates) == {"received": 3, "dropped": 2}


def test_snaplen_0_records_no_frames_and_pcapng_then_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "bare.parquet"
    with VethPair() as net:
        recorder = start_run("record", "-o", str(run), "--snaplen", "0", "--e2e",
                         "-p", str(os.getpid()), "-d", "60")
        exchange(net, count=2, refused=0)
        stop(recorder)
    assert all(r["frame"] is None for r in pq.read_table(run / "packets").to_pylist())
    code = cli.main(["report", str(run), "--no-hist", "--pcapng", str(tmp_path / "x.pcapng")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--snaplen" in err, err
    assert not list(tmp_path.glob("*.pcapng")) and not list(tmp_path.glob(".*.tmp"))


def test_snaplen_is_bounded_by_the_records_frame(capsys: pytest.CaptureFixture[str]) -> None:
    with BpfObject(bpf.object_bytes("ut_trace"), "ut_trace") as obj:
        limits = obj.btf().enum_values("ut_limits")
        layout = Layout.from_object(obj)
    assert SNAPLEN_MAX == limits["UT_FRAME_BYTES"] == layout.record["frame"].shape[0]
    # the frame rides last: without --snaplen the ring carries none of it
    assert layout.record_bytes(payload=True, receive=True) == layout.record.fields["frame"][1]
    for args in (["record", "-o", "/tmp/never.parquet", "--snaplen", str(SNAPLEN_MAX + 1)],
                 ["trace", "-d", "1", "--pcapng", "/tmp/never.pcapng", "--snaplen", "0"]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--snaplen" in err, err
    assert not Path("/tmp/never.parquet").exists() and not Path("/tmp/never.pcapng").exists()


def test_a_frame_without_its_link_header_is_raw_ip(tmp_path: Path) -> None:
    """A datagram parked for ARP, or on a raw-IP device, has no link header: the IDB says
    raw IP and Wireshark dissects it from its IP header on."""
    ip = bytes.fromhex("450000240001000040110000") + socket.inet_aton("10.0.0.1") + \
        socket.inet_aton("10.0.0.2")
    udp = (4000).to_bytes(2, "big") + (4840).to_bytes(2, "big") + (16).to_bytes(2, "big") + \
        b"\0\0" + b"8 bytes!"
    frame = pcapng.frame_of(ip + udp, len(ip + udp), 0, 1)
    assert frame.linktype == pcapng.LINKTYPE_RAW
    other = pcapng.frame_of(b"\xaa" * 4 + ip + udp, 4 + len(ip + udp), 4, 0xFFFE)
    assert other == frame  # a link header Wireshark cannot be told is cut off
    path = tmp_path / "raw.pcapng"
    path.write_bytes(pcapng.section_header("Linux") + pcapng.interface(
        frame.linktype, 128, "tun0", "test") + pcapng.packet(0, 1_700_000_000_123_456_789,
                                                             frame.data, frame.length, "fate=x"))
    assert tshark(path, "-e", "udp.dstport", "-e", "data.data", "-e", "frame.time_epoch") == [
        ["4840", b"8 bytes!".hex(), "1700000000.123456789"]]


@pytest.mark.vm
def test_receive_records_keep_the_frame_as_their_device_received_it(tmp_path: Path) -> None:
    run, capture = tmp_path / "rx.parquet", tmp_path / "rx.pcapng"
    with VethPair() as net:
        recorder = start_run("record", "-o", str(run), "--rx", "--port", str(OPEN_PORT), "-d", "60")
        exchange(net, count=4, refused=0)
        stop(recorder)
        receiver = net.if_b
    assert cli.main(["report", str(run), "--no-hist", "--pcapng", str(capture)]) == 0
    frames = tshark(capture, "-e", "frame.interface_name", "-e", "eth.type", "-e", "udp.dstport",
                    "-e", "data.data", "-e", "frame.comment")
    assert sorted(bytes.fromhex(data) for *_, data, _ in frames) == [payload(i) for i in range(4)]
    for name, eth_type, dport, _, text in frames:
        assert (name, eth_type, dport) == (receiver, "0x0800", str(OPEN_PORT))
        assert text.startswith("udptrace fate=received ") and "rx_stack=" in text
