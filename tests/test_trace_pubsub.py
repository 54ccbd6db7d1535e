"""`udptrace trace --pubsub`: every traced datagram labelled with its PubSub identity."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import start_tracer, udptrace

from udptrace.netns import VethPair


def test_trace_pubsub_labels_every_datagram_of_udptrace_publish(net: VethPair,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "trace.jsonl"
    tracer = start_tracer("--netns", net.ns_a, "--pubsub", "-d", "4", "--json", str(out))
    publisher = net.run(net.ns_a, udptrace(
        "publish", f"opc.udp://{net.addr_b}:4840/", "--count", "50", "--interval-ms", "5",
        "--sequence-numbers", "--publisher-id", "UInt32:70000", "--writer-group-id", "7"),
        capture_output=True, text=True, timeout=60)
    assert publisher.returncode == 0, publisher.stderr
    report, _ = tracer.communicate(timeout=30)
    packets = [json.loads(line) for line in out.read_text().splitlines()
               if '"type":"packet"' in line]
    assert len(packets) == 50
    labels = [p["pubsub"] for p in packets]
    assert {(p["publisher_id"], p["writer_group_id"]) for p in labels} == {(70000, 7)}
    assert {tuple(p["dataset_writer_ids"]) for p in labels} == {(62541,)}
    assert sorted(p["sequence_number"] for p in labels) == list(range(50))
    assert "latency per PubSub writer group" in report
    assert "70000" in report
