"""`udptrace join`: two namespaces stand in for two hosts, one recording per side.

Namespace a sends, namespace b receives and is recorded twice (two `record --rx`), so
every multicast datagram has two receiving recordings to be joined to. Four flows,
each with a known fate: a UADP publisher with sequence numbers to a subscriber (all
arrive), one to a port nobody listens on (all dropped by the receiver's kernel),
plain datagrams that carry a counter (not UADP: only the kernel's fingerprint of their
bytes tells them apart; all arrive), and datagrams whose bytes never change (nothing
tells them apart: all ambiguous).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import connected_to_listener, send_from, udptrace
from test_record_report import CHROMIUM_FLAGS, nests

from udptrace.netns import VethPair

MULTICAST, UNICAST_DROPPED, COUNTED, CONSTANT = 200, 30, 50, 20
COUNTED_PORT, CONSTANT_PORT = 4842, 4841


def _start(*commands: list[str]) -> list[subprocess.Popen]:
    """`udptrace record ...` each; returns once each says its programs are attached."""
    processes = [subprocess.Popen(udptrace(*args), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for args in commands]
    for process in processes:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("recording"), line + process.stderr.read()
    return processes


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    work = tmp_path_factory.mktemp("join")
    with VethPair() as net:
        # the sender's recording first: on a veth both ends are one event (netif_rx), and
        # programs on a tracepoint run in the order they were attached
        recorders = _start(["record", "-o", str(work / "tx.parquet"), "--netns", net.ns_a,
                            "--pubsub", "-d", "60"])
        recorders += _start(*(["record", "--rx", "-o", str(work / f"{name}.parquet"),
                               "--netns", net.ns_b, "--pubsub", "-d", "60"]
                              for name in ("rx1", "rx2")))
        ready = work / "subscribed"
        subscriber = net.popen(net.ns_b, udptrace(
            "subscribe", "opc.udp://224.0.0.22:4840/", "-i", net.if_b, "--json", "-d", "30",
            "--count", str(MULTICAST), "--ready-file", str(ready)), stdout=subprocess.PIPE,
            text=True)
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        publishers = [net.popen(net.ns_a, udptrace(
            "publish", url, "--sequence-numbers", "--writer-group-id", group, "--interval-ms",
            "5", "--count", str(count), "--json"), stdout=subprocess.PIPE, text=True)
            for url, group, count in (("opc.udp://224.0.0.22:4840/", "100", MULTICAST),
                                      (f"opc.udp://{net.addr_b}:4840/", "7", UNICAST_DROPPED))]
        send_from(net, CONSTANT, 0.02, 64, CONSTANT_PORT).wait(timeout=30)
        sender, listener = connected_to_listener(net, COUNTED_PORT)
        with sender, listener:
            listener.settimeout(5)
            for n in range(COUNTED):
                sender.send(f"datagram {n:06d} ".encode() * 4)
                listener.recv(2048)
                time.sleep(0.005)
        published = [json.loads(p.communicate(timeout=30)[0]) for p in publishers]
        received = json.loads(subscriber.communicate(timeout=30)[0].splitlines()[-1])["summary"]
        time.sleep(0.3)
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)
        for recorder in recorders:
            _, err = recorder.communicate(timeout=30)
            assert recorder.returncode == 0, err
    out = subprocess.run(udptrace("join", *(str(work / f"{n}.parquet") for n in (
        "tx", "rx1", "rx2")), "--json", str(work / "joined.json"), "-o",
        str(work / "joined.parquet")), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in (work / "joined.json").read_text().splitlines()]
    return {"work": work, "published": published, "received": received, "stdout": out.stdout,
            "datagrams": lines[:-1], "summary": lines[-1]}


def flows(run: dict, dport: int, daddr: str | None = None) -> list[dict]:
    found = [f for f in run["summary"]["flows"] if f["dport"] == dport
             and (daddr is None or f["daddr"] == daddr)]
    assert {f["receiver_rec"] for f in found} == {1, 2}, run["stdout"]
    return found


def test_every_multicast_datagram_is_joined_to_both_receiving_recordings(run: dict) -> None:
    assert run["published"][0]["messages_sent"] == MULTICAST
    assert run["received"]["datagrams"] == MULTICAST
    for flow in flows(run, 4840, "224.0.0.22"):
        assert (flow["sent"], flow["arrived"]) == (MULTICAST, MULTICAST), flow
        assert flow["lost"] == flow["ambiguous"] == flow["dropped_receiver"] == 0
        # one host: its one clock, no uncertainty, and no hop below zero
        assert flow["uncertainty_ns"] == 0
        for hop in ("sender_stack", "wire", "receiver_stack", "reader", "one_way"):
            assert flow[f"{hop}_ns_n"] == MULTICAST, hop
            assert flow[f"{hop}_ns_min"] >= 0, (hop, flow)
    (clock,) = run["summary"]["clocks"]
    assert clock["same_host"] and clock["how"].startswith("one clock")
    arrived = [d for d in run["datagrams"] if d["outcome"] == "arrived"
               and d["daddr"] == "224.0.0.22"]
    assert sorted(d["pubsub_sequence_number"] for d in arrived) == sorted(
        list(range(MULTICAST)) * 2)
    for d in arrived:  # the hops add up to the one-way time
        assert d["sender_stack_ns"] + d["wire_ns"] + d["receiver_stack_ns"] + d["reader_ns"] \
            == d["one_way_ns"]


def test_drops_in_the_receivers_kernel_keep_their_reason_apart_from_losses(run: dict) -> None:
    for flow in flows(run, 4840, "10.213.0.2"):
        assert flow["sent"] == flow["dropped_receiver"] == UNICAST_DROPPED
        assert flow["lost"] == flow["arrived"] == 0
    drops = {(d["receiver_rec"], d["kernel"], d["drop_reason"], d["drop_stage"]): d["datagrams"]
             for d in run["summary"]["drops"]}
    assert drops == {(rec, "receiver", "NO_SOCKET", "rx_stack"): UNICAST_DROPPED
                     for rec in (1, 2)}
    assert run["summary"]["lost_between_hosts"] == []


def test_datagrams_nothing_tells_apart_are_ambiguous_never_joined(run: dict) -> None:
    for flow in flows(run, CONSTANT_PORT):
        assert (flow["sent"], flow["ambiguous"], flow["arrived"]) == (CONSTANT, CONSTANT, 0)
    examples = [e for e in run["summary"]["ambiguous_examples"] if e["dport"] == CONSTANT_PORT]
    assert examples and all(e["candidate_arrivals"] == CONSTANT for e in examples)
    unmatched = {u["receiver_rec"]: u for u in run["summary"]["unmatched_arrivals"]}
    assert {r: (u["dport"], u["datagrams"], u["ambiguous"]) for r, u in unmatched.items()} == {
        1: (CONSTANT_PORT, CONSTANT, CONSTANT), 2: (CONSTANT_PORT, CONSTANT, CONSTANT)}
    assert "ambiguous: 40 datagrams" in run["stdout"]


def test_datagrams_that_only_the_fingerprint_tells_apart_are_joined(run: dict) -> None:
    assert "fingerprint" in run["summary"]["identity"]
    for flow in flows(run, COUNTED_PORT):
        assert (flow["sent"], flow["arrived"], flow["ambiguous"]) == (COUNTED, COUNTED, 0), flow
        assert flow["one_way_ns_n"] == COUNTED and flow["wire_ns_min"] >= 0
    fingerprints = {d["fingerprint"] for d in run["datagrams"] if d["dport"] == COUNTED_PORT}
    assert len(fingerprints) == COUNTED and None not in fingerprints


def test_the_joined_parquet_and_json_hold_the_same_datagrams(run: dict) -> None:
    table = pq.read_table(run["work"] / "joined.parquet")
    assert table.num_rows == len(run["datagrams"]) == 2 * (
        MULTICAST + UNICAST_DROPPED + COUNTED + CONSTANT)
    summary = json.loads(table.schema.metadata[b"udptrace"])
    assert summary["flows"] == run["summary"]["flows"]
    assert sorted(table["outcome"].to_pylist()) == sorted(d["outcome"] for d in run["datagrams"])


def test_bad_input_is_a_one_line_error(run: dict, tmp_path: Path) -> None:
    tx = str(run["work"] / "tx.parquet")
    for args, says in ((("join", tx), "two recordings or more"),
                       (("join", tx, str(tmp_path / "none.parquet")), "no recording at"),
                       (("join", tx, tx, "-o", str(tmp_path)), "it is a directory")):
        out = subprocess.run(udptrace(*args), capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and says in out.stderr, (args, out.stderr)
        assert len(out.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    assert sys.executable  # the joins above ran on this interpreter's udptrace


def test_the_page_and_the_timeline_show_the_joined_datagrams(run: dict, tmp_path: Path) -> None:
    page, timeline = tmp_path / "joined.html", tmp_path / "joined.json"
    out = subprocess.run(udptrace("join", *(str(run["work"] / f"{n}.parquet") for n in (
        "tx", "rx1", "rx2")), "--html", str(page), "--perfetto", str(timeline)),
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    events = json.loads(timeline.read_text())["traceEvents"]
    tracks: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            tracks[(e["pid"], e["tid"])].append(e)
    assert all(nests(slices) for slices in tracks.values())
    datagrams = [e for e in events if e.get("cat") == "datagram"]
    assert len(datagrams) == 2 * (MULTICAST + COUNTED)
    hops = {e["name"] for e in events if e.get("cat") == "hop"}
    assert hops == {"sender stack", "wire", "receiver stack", "reader"}
    instants = {e["name"] for e in events if e["ph"] == "i"}
    assert instants == {"dropped by the receiver", "ambiguous"}
    chromium = shutil.which("chromium")
    assert chromium, "the HTML test needs Debian's chromium: ./setup.sh test installs it"
    browser = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90)
    dom = browser.stdout
    for div in ("over-time", "breakdown"):
        assert re.search(rf'id="{div}"[^>]*class="[^"]*js-plotly-plot', dom), div
    assert not re.search(r"<html[^>]*data-errors", dom)
    assert "NO_SOCKET" in dom and "one clock: the same boot" in dom
