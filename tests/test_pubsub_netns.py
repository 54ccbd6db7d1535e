"""Publisher and subscriber: their accounting on its own, then real traffic, in-process over
loopback and as `udptrace publish` / `udptrace subscribe` in two network namespaces."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import udptrace

from udptrace.netns import VethPair
from udptrace.pubsub.publisher import (
    Publisher,
    PublisherConfig,
    PublishSummary,
    field_value,
)
from udptrace.pubsub.stats import IntervalStats
from udptrace.pubsub.subscriber import SequenceTracker, Subscriber, SubscriberConfig, Tally
from udptrace.pubsub.uadp import (
    BuiltinType,
    DateTime,
    decode_network_message,
    encode_network_message,
)

B = BuiltinType
TUTORIAL = bytes.fromhex(
    "f101ba08016400014df4e11081f2e3f3b67cdd01e54167ce8b4167ce01000d7af3e3f3b67cdd01"
)
TUTORIAL_SUBSCRIBER_FIELDS = (B.DateTime, B.Int32, B.Int64, B.Boolean)

# --- sequence accounting -----------------------------------------------------------------


def tracked(*sequence: int) -> SequenceTracker:
    tracker = SequenceTracker()
    for number in sequence:
        tracker.add(number)
    return tracker


def counts(tracker: SequenceTracker) -> tuple[int, int, int]:
    return tracker.lost, tracker.duplicates, tracker.reordered


def test_in_order_is_clean() -> None:
    assert counts(tracked(*range(10))) == (0, 0, 0)


def test_a_gap_is_lost_until_it_arrives_late() -> None:
    assert counts(tracked(1, 2, 5, 6)) == (2, 0, 0)
    assert counts(tracked(1, 2, 5, 3, 6, 4)) == (0, 0, 2)


def test_duplicates_new_and_old() -> None:
    assert counts(tracked(1, 2, 2, 3, 1)) == (0, 2, 0)
    assert counts(tracked(1, 3, 2, 2)) == (0, 1, 1)


def test_sequence_numbers_wrap_at_16_bits() -> None:
    assert counts(tracked(65534, 65535, 0, 1)) == (0, 0, 0)
    assert counts(tracked(65535, 1, 0)) == (0, 0, 1)


def test_a_number_missing_a_lap_ago_stays_lost() -> None:
    laps = [n & 0xFFFF for n in range(3 * 65536) if n != 7]
    assert counts(tracked(*laps)) == (1, 0, 0)


# --- publisher messages ------------------------------------------------------------------


def test_default_message_has_the_tutorial_layout() -> None:
    publisher = Publisher(PublisherConfig(config_version=(0xCE6741E5, 0xCE67418B)))
    tutorial = decode_network_message(TUTORIAL)
    now = tutorial.dataset_messages[0].timestamp
    assert now is not None
    ours = publisher.encode(0, now)
    assert len(ours) == len(TUTORIAL)
    # Identical except the field value: the tutorial reads its clock a second time.
    assert ours[:-8] == TUTORIAL[:-8]
    assert decode_network_message(ours).dataset_messages[0].fields[0].value == now


def test_sequence_numbers_in_both_headers() -> None:
    publisher = Publisher(PublisherConfig(sequence_numbers=True))
    msg = decode_network_message(publisher.encode(70_000, DateTime.now()))
    assert msg.group_header is not None
    assert msg.group_header.sequence_number == 70_000 - 65_536
    assert msg.dataset_messages[0].sequence_number == 70_000 - 65_536


def test_four_fields_count_up() -> None:
    publisher = Publisher(PublisherConfig(fields=TUTORIAL_SUBSCRIBER_FIELDS))
    now = DateTime.now()
    fields = decode_network_message(publisher.encode(3, now)).dataset_messages[0].fields
    assert [(f.type, f.value) for f in fields] == [
        (B.DateTime, now),
        (B.Int32, 3),
        (B.Int64, 3),
        (B.Boolean, True),
    ]


@pytest.mark.parametrize("t", [t for t in BuiltinType if t is not B.Null])
def test_every_field_type_can_be_published(t: BuiltinType) -> None:
    # in the type's range at any message number, and read back as sent
    publisher = Publisher(PublisherConfig(fields=(t,)))
    now = DateTime.now()
    for index in (0, 1, 2**63 + 5):
        msg = decode_network_message(publisher.encode(index, now))
        assert msg.dataset_messages[0].fields == [field_value(t, index, now)]
    assert field_value(B.SByte, 255, DateTime(0)).value == -1


def test_payload_padding_keeps_the_fields() -> None:
    plain = Publisher(PublisherConfig(fields=TUTORIAL_SUBSCRIBER_FIELDS))
    padded = Publisher(PublisherConfig(fields=TUTORIAL_SUBSCRIBER_FIELDS, payload_bytes=1200))
    now = DateTime.now()
    data = padded.encode(5, now)
    assert len(data) == 1200
    assert data.rstrip(b"\x00") == plain.encode(5, now).rstrip(b"\x00")
    msg = decode_network_message(data)
    assert len(msg.dataset_messages[0].fields) == 4
    assert encode_network_message(msg) == data


def test_padding_is_read_by_asyncua_too() -> None:
    uadp = pytest.importorskip("asyncua.pubsub.uadp")
    utils = pytest.importorskip("asyncua.common.utils")
    data = Publisher(PublisherConfig(fields=TUTORIAL_SUBSCRIBER_FIELDS, payload_bytes=300)).encode(
        9, DateTime.now()
    )
    theirs = uadp.UadpNetworkMessage.from_binary(utils.Buffer(data))
    assert [v.Value for v in theirs.Payload[0].Data][1:] == [9, 9, True]


def test_interval_stats() -> None:
    stats = IntervalStats.from_timestamps([0, 1_000_000, 2_000_000, 3_500_000])
    assert stats is not None
    assert stats.intervals == 3
    assert stats.mean_us == pytest.approx(3_500_000 / 3 / 1e3)
    assert stats.max_us == 1_500
    assert IntervalStats.from_timestamps([5]) is None


def test_tally_counts_streams_and_decode_errors() -> None:
    tally = Tally()
    publisher = Publisher(PublisherConfig(sequence_numbers=True))
    for i in (0, 1, 3, 3):
        tally.receive(i * 1_000_000, ("10.0.0.1", 1), publisher.encode(i, DateTime.now()))
    unnumbered = Publisher(PublisherConfig(dataset_writer_id=7))
    tally.receive(9, ("10.0.0.1", 1), unnumbered.encode(0, DateTime.now()))
    tally.receive(10, ("10.0.0.1", 1), b"\x02")
    summary = tally.summary("opc.udp://x:1/", 1.0)
    assert (summary.datagrams, summary.decode_errors) == (6, 1)
    numbered, plain = summary.streams
    assert (numbered.dataset_writer_id, numbered.messages, numbered.sequenced) == (62541, 4, 4)
    assert (numbered.lost, numbered.duplicates, numbered.reordered) == (1, 1, 0)
    assert (plain.dataset_writer_id, plain.messages, plain.sequenced) == (7, 1, 0)


# --- in-process over loopback ------------------------------------------------------------


def wait_for(path: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.01)


def assert_paced(summary: PublishSummary, interval_us: float) -> None:
    """Sends sit on the deadline grid: the first at start, the last (messages - 1 +
    missed deadlines) periods later, each late by no more than the worst lateness. This
    holds however loaded the machine is, which a bound on the mean interval would not."""
    stats = summary.intervals
    assert stats is not None
    span_us = stats.mean_us * stats.intervals
    grid_us = (stats.intervals + summary.missed_deadlines) * interval_us
    assert abs(span_us - grid_us) <= summary.max_lateness_us + 1
    assert stats.min_us > 0


def test_loopback_publish_and_subscribe(tmp_path: Path) -> None:
    url = f"opc.udp://127.0.0.1:{40000 + os.getpid() % 20000}/"
    ready = tmp_path / "ready"
    subscriber = Subscriber(SubscriberConfig(url=url, count=100, duration_s=20, ready_file=ready))
    received: list[bytes] = []
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(subscriber.run(on_message=lambda r: received.append(r.data)))
    )
    thread.start()
    try:
        wait_for(ready)
        sent: list[bytes] = []
        config = PublisherConfig(url=url, count=100, interval_ns=2_000_000, sequence_numbers=True)
        published = Publisher(config).run(on_sent=lambda i, data: sent.append(data))
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert published.messages_sent == 100
    assert_paced(published, 2_000)
    (summary,) = result
    assert received == sent
    (stream,) = summary.streams
    assert (stream.messages, stream.lost, stream.duplicates, stream.reordered) == (100, 0, 0, 0)


def test_a_stalled_publisher_skips_missed_deadlines_instead_of_bursting() -> None:
    def stall(index: int, data: bytes) -> None:
        if index == 2:
            time.sleep(0.070)  # 3.5 periods: deadlines 3, 4 and 5 pass meanwhile

    config = PublisherConfig(url="opc.udp://127.0.0.1:9/", count=6, interval_ns=20_000_000)
    summary = Publisher(config).run(on_sent=stall)
    assert summary.messages_sent == 6
    assert summary.missed_deadlines >= 3
    assert summary.intervals is not None
    assert summary.intervals.min_us > 10_000  # no catch-up burst
    assert_paced(summary, 20_000)


def test_publisher_stops_on_request_within_a_period() -> None:
    stop = threading.Event()
    publisher = Publisher(PublisherConfig(url="opc.udp://127.0.0.1:9/", interval_ns=10**9))
    threading.Timer(0.2, stop.set).start()
    began = time.monotonic()
    summary = publisher.run(stop)
    assert time.monotonic() - began < 1.0
    assert summary.messages_sent == 1


# --- `udptrace publish` and `udptrace subscribe` in two network namespaces ---------------

@pytest.fixture(scope="module")
def netns() -> Iterator[VethPair]:
    with VethPair() as pair:
        yield pair


def in_netns(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *udptrace(*args)]


@dataclass
class Exchange:
    published: dict[str, Any]
    messages: list[dict[str, Any]]
    summary: dict[str, Any]


def exchange(
    pair: VethPair,
    tmp_path: Path,
    *,
    publish_url: str,
    subscribe_url: str,
    publish: tuple[str, ...] = (),
    subscribe: tuple[str, ...] = (),
    count: int,
    interval_ms: float,
) -> Exchange:
    """Run one subscriber (namespace b) and then one publisher (namespace a) to the end."""
    ready = tmp_path / "subscriber.ready"
    budget_s = 10 + count * interval_ms / 1000 * 3
    sub = subprocess.Popen(
        in_netns(
            pair.ns_b,
            "subscribe",
            subscribe_url,
            "--json",
            "--count",
            str(count),
            "--duration",
            str(budget_s),
            "--ready-file",
            str(ready),
            *subscribe,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        try:
            wait_for(ready)
        except TimeoutError:
            sub.kill()
            raise AssertionError(f"subscriber never got ready: {sub.communicate()[1]}") from None
        pub = subprocess.run(
            in_netns(
                pair.ns_a,
                "publish",
                publish_url,
                "--json",
                "--count",
                str(count),
                "--interval-ms",
                str(interval_ms),
                "--duration",
                str(budget_s),
                *publish,
            ),
            capture_output=True,
            text=True,
            timeout=budget_s + 10,
        )
        assert pub.returncode == 0, pub.stderr
        out, err = sub.communicate(timeout=budget_s + 10)
        assert sub.returncode == 0, err
    finally:
        if sub.poll() is None:
            sub.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                sub.communicate(timeout=5)
    *lines, last = (json.loads(line) for line in out.splitlines())
    return Exchange(json.loads(pub.stdout), lines, last["summary"])


def assert_clean_stream(result: Exchange, count: int) -> None:
    assert result.published["messages_sent"] == count
    assert result.published["send_errors"] == 0
    assert result.summary["datagrams"] == count
    assert result.summary["decode_errors"] == 0
    (stream,) = result.summary["streams"]
    assert stream["publisher_id"] == "UInt16:2234"
    assert (stream["writer_group_id"], stream["dataset_writer_id"]) == (100, 62541)
    assert (stream["messages"], stream["sequenced"]) == (count, count)
    assert (stream["lost"], stream["duplicates"], stream["reordered"]) == (0, 0, 0)


def assert_bytes_are_the_publishers(result: Exchange, fields: tuple[BuiltinType, ...]) -> None:
    """Every datagram is exactly what Publisher.encode makes for its index and timestamp."""
    first = decode_network_message(bytes.fromhex(result.messages[0]["hex"])).dataset_messages[0]
    assert first.config_version_major is not None and first.config_version_minor is not None
    publisher = Publisher(
        PublisherConfig(
            fields=fields,
            sequence_numbers=True,
            config_version=(first.config_version_major, first.config_version_minor),
        )
    )
    for index, message in enumerate(result.messages):
        data = bytes.fromhex(message["hex"])
        stamp = decode_network_message(data).dataset_messages[0].timestamp
        assert stamp is not None
        assert data == publisher.encode(index, stamp), f"message {index}"


def test_unicast_between_namespaces(netns: VethPair, tmp_path: Path) -> None:
    url = f"opc.udp://{netns.addr_b}:4840/"
    result = exchange(
        netns,
        tmp_path,
        publish_url=url,
        subscribe_url=url,
        count=200,
        interval_ms=5,
        publish=("--sequence-numbers", "--fields", "DateTime,Int32,Int64,Boolean"),
    )
    assert_clean_stream(result, 200)
    assert_bytes_are_the_publishers(result, TUTORIAL_SUBSCRIBER_FIELDS)
    published = result.published | {"intervals": IntervalStats(**result.published["intervals"])}
    assert_paced(PublishSummary(**published), 5_000)


def test_multicast_between_namespaces(netns: VethPair, tmp_path: Path) -> None:
    url = "opc.udp://224.0.0.22:4840/"
    result = exchange(
        netns,
        tmp_path,
        publish_url=url,
        subscribe_url=url,
        count=100,
        interval_ms=5,
        publish=("--sequence-numbers", "-i", netns.if_a),
        subscribe=("-i", netns.if_b),
    )
    assert_clean_stream(result, 100)
    assert_bytes_are_the_publishers(result, (B.DateTime,))


def test_ipv6_unicast_with_padding(netns: VethPair, tmp_path: Path) -> None:
    url = f"opc.udp://[{netns.addr6_b}]:4840/"
    result = exchange(
        netns,
        tmp_path,
        publish_url=url,
        subscribe_url=url,
        count=50,
        interval_ms=5,
        publish=("--sequence-numbers", "--payload-bytes", "1000"),
    )
    assert_clean_stream(result, 50)
    assert {m["size"] for m in result.messages} == {1000}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_end_both_commands_with_a_summary(sig: signal.Signals, tmp_path: Path) -> None:
    url = f"opc.udp://127.0.0.1:{40000 + (os.getpid() + 1) % 20000}/"
    ready = tmp_path / "ready"
    # Both commands also end by themselves after 30 s.
    subscribe = [*udptrace("subscribe"), url, "--json", "-d", "30", "--ready-file", str(ready)]
    publish = [*udptrace("publish"), url, "--json", "-d", "30", "--interval-ms", "10"]
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        procs["subscribe"] = subprocess.Popen(subscribe, stdout=subprocess.PIPE, text=True)
        wait_for(ready)
        procs["publish"] = subprocess.Popen(publish, stdout=subprocess.PIPE, text=True)
        # Signal once traffic flows: the subscriber prints one line per message.
        stdout = procs["subscribe"].stdout
        assert stdout is not None
        early = [stdout.readline() for _ in range(5)]
        for proc in procs.values():
            proc.send_signal(sig)
        outputs = {name: proc.communicate(timeout=10)[0] for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    assert all(proc.returncode == 0 for proc in procs.values())
    assert all(json.loads(line)["size"] == 39 for line in early)
    published = json.loads(outputs["publish"].splitlines()[-1])
    received = json.loads(outputs["subscribe"].splitlines()[-1])["summary"]
    assert published["messages_sent"] >= 5
    assert received["datagrams"] >= 5


def test_ipv6_link_local_multicast(netns: VethPair, tmp_path: Path) -> None:
    url = "opc.udp://[ff02::1:2234]:4840/"
    result = exchange(
        netns,
        tmp_path,
        publish_url=url,
        subscribe_url=url,
        count=50,
        interval_ms=5,
        publish=("--sequence-numbers", "-i", netns.if_a),
        subscribe=("-i", netns.if_b),
    )
    assert_clean_stream(result, 50)
