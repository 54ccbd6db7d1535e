"""The field table: JSON lines and Parquet columns of the same packets say the same, field by
field, and the JSON text is exact (numbers, escapes, null and absent members)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from udptrace.pubsub.headers import UadpHeaders
from udptrace.report import ndjson
from udptrace.report.columns import PacketColumns, packet_columns
from udptrace.report.fields import HIDDEN, Batch, Field, Table, Values, packet_table
from udptrace.trace.decode import Packets
from udptrace.trace.layout import Layout

T0 = 7_000_000_000_000
REASONS = {6: "QDISC_DROP"}


def _at(r: np.ndarray, layout: Layout, row: int, **stages: int) -> None:
    for stage, offset in stages.items():
        r["ts"][row, layout.stage_index(stage)] = T0 + row * 1_000_000 + offset


def varied(layout: Layout) -> tuple[Packets, UadpHeaders]:
    """A packet of every shape the outputs tell apart, and UADP labels for some."""
    n = 7
    r = np.zeros(n, layout.record)
    fates, syscalls = layout.fates_by_name, {v: k for k, v in layout.syscalls.items()}
    r["kind"], r["fate"], r["syscall"] = layout.kind("packet"), fates["sent"], syscalls["sendto"]
    r["pid"], r["tid"], r["comm"], r["cpu"] = 4242, np.arange(n) + 4242, b"pub", 1
    r["family"], r["sport"], r["dport"], r["len"], r["udp_len"] = 2, 40000, 4840, 106, 72
    r["saddr"][:, 10:] = [0xFF, 0xFF, 10, 0, 0, 1]
    r["daddr"][:, 10:] = [0xFF, 0xFF, 10, 0, 0, 2]
    r["ifname"], r["netns"], r["syscall_id"] = b"eth0", 4026531840, np.arange(n) + (1 << 40)
    for row in range(n):
        _at(r, layout, row, syscall=0, dev_queue=1_500, xmit_start=1_900, xmit_done=3_100)
    exits = T0 + np.arange(n, dtype=np.uint64) * 1_000_000 + 3_400
    rets = np.full(n, 64, np.int64)
    r["xmit_context"] = layout.contexts.index("sender")
    # 1: dropped in the qdisc, its syscall's end never seen
    r["fate"][1], r["drop_reason"][1], r["drop_stage"][1] = (
        fates["dropped"], 6, layout.stage_index("qdisc_enqueue"))
    r["ts"][1, layout.stage_index("xmit_start")] = r["ts"][1, layout.stage_index("xmit_done")] = 0
    _at(r, layout, 1, qdisc_enqueue=1_700, free=2_000)
    exits[1], r["xmit_context"][1] = 0, 0
    # 2: read by a receiver; 3: on a receive path, nobody read it
    for row in (2, 3):
        r["flags"][row] |= layout.flags["receive"] | layout.flags["handed_off"]
        _at(r, layout, row, rx_handoff=2_600, rx_stack=4_000, sock_queue=6_000)
        r["rx_ifname"][row], r["rx_netns"][row], r["rx_ifindex"][row] = b"veth1", 4026532000, 9
    r["fate"][2], r["fate"][3] = fates["received"], fates["unread"]
    _at(r, layout, 2, rx_read=9_000, rx_done=9_500)
    r["rx_pid"][2], r["rx_tid"][2], r["rx_comm"][2], r["rx_cpu"][2] = 5150, 5151, b"sub", 0
    r["rx_syscall"][2], r["rx_ret"][2] = syscalls["recvfrom"], 64
    # 4: everything the kernel keeps beside the stages; negative returns; GSO; a wake-up
    _at(r, layout, 4, timer=-20_000, wakeup=-15_000, app=-9_000, qdisc_enqueue=1_700,
        qdisc_dequeue=2_500)
    r["timer_expires"][4] = T0 + 4_000_000 - 21_000
    r["txtime"][4], r["txtime_clock"][4] = T0 + 4_000_000 + 2_000, 11
    r["tstamp_sw"][4], r["tstamp_hw"][4] = T0 + 4_000_000 + 3_200, 123_456_789
    r["gso_segs"][4], r["gso_size"][4], r["interval_ns"][4] = 10, 100, 1_000_000
    r["xmit_rc"][4], rets[4] = -105, -11
    r["xmit_context"][4], r["completion_context"][4] = (layout.contexts.index("net_tx"),
                                                        layout.contexts.index("net_rx"))
    r["softirq_pending_ns"][4] = 7_777
    r["flags"][4] |= layout.flags["fragment"] | layout.flags["neigh_queued"]
    # 5: names nobody knows, IPv6, a comm that needs escaping, no syscall (--rx)
    r["fate"][5], r["syscall"][5], r["family"][5] = 99, 77, 10
    r["saddr"][5] = np.frombuffer(bytes.fromhex("fd000000000000000000000000000001"), np.uint8)
    r["comm"][5], r["ifname"][5] = 'a"b\\\té'.encode(), b""
    r["ts"][5, layout.stage_index("syscall")] = 0
    # 6: the biggest numbers a u64 and an s64 hold
    r["syscall_id"][6], rets[6] = 2**64 - 1, -(2**63)
    n_ = np.arange(n)
    headers = UadpHeaders(
        valid=np.isin(n_, (0, 4, 6)), publisher_id_type=np.where(n_ == 6, 5, 1).astype(np.int8),
        publisher_id=np.where(n_ == 6, np.uint64(2**64 - 3), np.uint64(2234)),
        writer_group_id=np.where(n_ == 4, -1, 100).astype(np.int32),
        network_sequence=np.where(n_ == 0, 17, -1).astype(np.int32),
        dataset_writer_id=np.where(n_ == 6, -1, 62541).astype(np.int32),
        dataset_sequence=np.where(n_ == 0, 3, -1).astype(np.int32))
    return Packets(r, exits, rets), headers


def _member(record: dict, path: tuple[str, ...]) -> object:
    for key in path:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def _paths(record: dict, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out = set()
    for key, value in record.items():
        if isinstance(value, dict):
            out |= _paths(value, (*prefix, key))
        else:
            out.add((*prefix, key))
    return out


def test_json_and_parquet_say_the_same_of_every_field(layout: Layout) -> None:
    packets, headers = varied(layout)
    table = packet_table(layout, pubsub=True)
    batch = Batch(packets, layout, REASONS, headers)
    lines = [json.loads(line) for line in ndjson.encode(table, batch)[0].splitlines()]
    columns = pa.table(packet_columns(table, batch)).to_pylist()
    assert len(lines) == len(columns) == len(packets)
    both = [leaf for leaf in table.leaves if leaf.field.json and leaf.field.parquet]
    for line, row in zip(lines, columns, strict=True):
        for leaf in both:
            assert _member(line, leaf.path) == row[leaf.column], (leaf.path, line, row)
        # a member for every JSON value, a column for every member
        assert _paths(line) <= {leaf.path for leaf in table.leaves if leaf.field.json}
    only_json = {leaf.path for leaf in table.leaves if not leaf.field.parquet}
    assert only_json == {("type",)}
    assert len({leaf.column for leaf in table.columns}) == len(table.columns)
    shown = {name for leaf in table.leaves for name in leaf.field.sources}
    assert set(layout.record.names) - shown == set(HIDDEN)


def test_columns_no_row_of_a_batch_has_are_nulls_of_their_type(layout: Layout) -> None:
    packets, headers = varied(layout)
    table = packet_table(layout, pubsub=True)
    empty = Batch(Packets.empty(layout), layout, REASONS)
    plain = Packets(packets.records[:1], packets.syscall_exit[:1], packets.syscall_ret[:1])
    labels = UadpHeaders(*(getattr(headers, f)[:1] for f in headers.__dataclass_fields__))
    batch = Batch(plain, layout, REASONS, labels)
    made = PacketColumns(table, empty)(batch)
    assert made.equals(pa.table(packet_columns(table, Batch(plain, layout, REASONS, labels))))
    assert made["rx_pid"].null_count == made["txtime_launch_ns"].null_count == 1


def test_json_records_keep_their_names_and_null_rules(layout: Layout) -> None:
    packets, headers = varied(layout)
    batch = Batch(packets, layout, REASONS, headers)
    text = ndjson.encode(packet_table(layout, pubsub=True), batch)[0].decode()
    sent, dropped, read, unread, timed, odd, big = map(json.loads, text.splitlines())
    assert list(sent)[:20] == [
        "type", "ts_ns", "pid", "tid", "comm", "cpu", "family", "saddr", "sport", "daddr",
        "dport", "len", "udp_len", "gso_segs", "gso_size", "ifname", "netns", "stages",
        "total_ns", "fate"]
    assert sent["stages"] == {"syscall": 0, "dev_queue": 1_500, "xmit_start": 1_900,
                              "xmit_done": 3_100}
    assert sent["syscall"] == {"id": 2**40, "name": "sendto", "packet_index": 0,
                               "exit_ns": 3_400, "ret": 64}
    assert sent["pubsub"] == {"publisher_id": 2234, "writer_group_id": 100,
                              "dataset_writer_ids": [62541], "sequence_number": 17,
                              "dataset_sequence_number": 3}
    assert (sent["gso_segs"], sent["interval_ns"], sent["drop_reason"]) == (None, None, None)
    assert "receiver" not in sent and "txtime" not in sent and "e2e_ns" not in sent
    assert dropped["total_ns"] is None and dropped["syscall"]["exit_ns"] is None
    assert (dropped["drop_reason"], dropped["drop_stage"]) == ("QDISC_DROP", "qdisc_enqueue")
    assert "pubsub" not in dropped and dropped["xmit_context"] is None
    assert read["receiver"] == {"pid": 5150, "tid": 5151, "comm": "sub", "cpu": 0,
                                "syscall": "recvfrom", "ret": 64, "ifname": "veth1",
                                "netns": 4026532000}
    assert read["rx_ns"] == 9_500 - 2_600 and read["e2e_ns"] == 9_500
    assert unread["receiver"] == {"ifname": "veth1", "netns": 4026532000}
    assert unread["rx_ns"] is None and unread["e2e_ns"] is None
    assert timed["stages"]["timer"] == -20_000 and timed["timer_expires_ns"] == -21_000
    assert timed["app_to_wire_ns"] == 12_100 and "app_to_wire_ns" not in sent
    assert timed["txtime"] == {"clock": "tai", "launch_ns": 2_000, "qdisc_enqueue_ns": -300,
                               "qdisc_dequeue_ns": 500, "xmit_start_ns": -100}
    assert timed["tx_timestamp"] == {"software_ns": 3_200, "hardware_ns": 123_456_789}
    assert (timed["xmit_rc"], timed["syscall"]["ret"], timed["gso_segs"]) == (-105, -11, 10)
    assert (timed["fragment"], timed["neigh_queued"], sent["fragment"]) == (True, True, False)
    assert (timed["xmit_context"], timed["completion_context"]) == ("net_tx", "net_rx")
    assert timed["pubsub"]["writer_group_id"] is None
    assert (odd["fate"], odd["syscall"]["name"], odd["family"]) == ("unknown", "unknown", "ipv6")
    assert (odd["comm"], odd["ifname"], odd["saddr"]) == ('a"b\\\té', "", "fd00::1")
    assert odd["stages"] == {"dev_queue": 0, "xmit_start": 400, "xmit_done": 1_600}
    assert big["syscall"]["id"] == 2**64 - 1 and big["syscall"]["ret"] == -(2**63)
    assert big["pubsub"]["publisher_id"] == 2**64 - 3
    assert big["pubsub"]["dataset_writer_ids"] == []


def test_a_field_the_record_gains_reaches_both_outputs(layout: Layout) -> None:
    """A field added to ut_record.h appears in JSON and Parquet under its C name (the
    fingerprint of issue 24 is one): checked on the real record once it has one."""
    if "fingerprint" not in layout.record.names:
        pytest.skip("struct ut_record has no fingerprint yet")
    packets, _ = varied(layout)
    values = np.arange(len(packets), dtype=np.uint64) + np.uint64(2**63)  # past int64
    packets.records["fingerprint"] = values
    table = packet_table(layout)
    batch = Batch(packets, layout, REASONS)
    lines = ndjson.encode(table, batch)[0].splitlines()
    expected = values.tolist()
    assert [json.loads(line)["fingerprint"] for line in lines] == expected
    assert pa.table(packet_columns(table, batch))["fingerprint"].to_pylist() == expected


@given(values=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=40),
       base=st.integers(0, 2**64 - 1), unsigned=st.booleans())
def test_numbers_are_written_as_python_writes_them(layout: Layout, values: list[int], base: int,
                                                   unsigned: bool) -> None:
    data = (np.array([min(base + abs(v) % 10**6, 2**64 - 1) for v in values], np.uint64)
            if unsigned else np.array(values, np.int64))
    valid = np.array([v % 3 != 0 for v in values])
    batch = Batch(Packets(np.zeros(len(data), layout.record), data, data), layout, {})
    for mask in (None, valid):
        table = Table((Field("n", lambda _, mask=mask: Values(data, mask)),))
        lines = b"".join(ndjson.encode(table, batch)).splitlines()
        assert [json.loads(line)["n"] for line in lines] == [
            x if mask is None or ok else None
            for x, ok in zip(data.tolist(), valid.tolist(), strict=True)]
