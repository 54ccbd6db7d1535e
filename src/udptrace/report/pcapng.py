"""A recording as pcapng, for Wireshark and tshark: each traced datagram's frame, with its
udptrace times in the frame's comment.

One Enhanced Packet Block per record (a receive record: per arrival), in time order,
holding the frame bytes the kernel kept (``record --snaplen``) and the frame's whole
length; one Interface Description Block per device, network namespace and link type, so
Wireshark dissects Ethernet, or raw IP where the frame had no link header (a packet
parked for ARP, a raw-IP device, a multicast copy looped back). Timestamps are
CLOCK_REALTIME, from the recording's clock samples, at the moment the frame was read. The
comment says who sent it (a send record), the fate (with the drop's reason and stage),
each stage reached in ns since time zero, the spans and who received it, as ``key=value``
words a display filter finds: ``frame.comment contains "fate=dropped"``.

The format (IETF draft-ietf-opsawg-pcapng): blocks of type, length, body padded to 32
bits, length again; options as code, length, value padded, ended by code 0. Little-endian
throughout, which the Section Header's byte-order magic tells readers.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

from udptrace import __version__
from udptrace.errors import UsageError
from udptrace.report.columns import stage_column
from udptrace.report.parquet import Recording, column
from udptrace.trace.timebase import realtime_ns

SHB, IDB, EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, OPT_COMMENT = 0, 1
SHB_OS, SHB_USERAPPL = 3, 4
IF_NAME, IF_DESCRIPTION, IF_TSRESOL = 2, 3, 9
NANOSECONDS = 9  # if_tsresol: 10^-9 s per timestamp unit

LINKTYPE_ETHERNET, LINKTYPE_RAW = 1, 101  # raw: the frame starts at its IPv4 or IPv6 header
# ARPHRD_* (linux/if_arp.h) whose link header is Ethernet's: loopback's is too, all zeros
ETHERNET_DEVICES = {1, 772}
# where the kernel reads the frame (describe_frame): the first of these a record reached
# is the frame's time; a record with none has its time zero
CAPTURE_STAGES = ("dev_queue", "rx_driver", "rx_stack")


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _options(*options: tuple[int, bytes]) -> bytes:
    return b"".join(_option(c, v) for c, v in options) + _option(OPT_END, b"")


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def section_header(os_name: str) -> bytes:
    return _block(SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + _options(
        (SHB_OS, os_name.encode()), (SHB_USERAPPL, f"udptrace {__version__}".encode())))


def interface(linktype: int, snaplen: int, name: str, description: str) -> bytes:
    return _block(IDB, struct.pack("<HHI", linktype, 0, snaplen) + _options(
        (IF_NAME, name.encode()), (IF_DESCRIPTION, description.encode()),
        (IF_TSRESOL, bytes([NANOSECONDS]))))


def packet(interface_id: int, ts_ns: int, data: bytes, length: int, comment: str) -> bytes:
    header = struct.pack("<IIIII", interface_id, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data),
                         max(length, len(data)))
    return _block(EPB, header + data + b"\0" * (-len(data) % 4)
                  + _options((OPT_COMMENT, comment.encode())))


@dataclass(frozen=True)
class Frame:
    """A record's frame as pcapng holds it: the link type, the bytes, the whole length."""

    linktype: int
    data: bytes
    length: int


def frame_of(data: bytes | None, length: int, l3: int, dev_type: int) -> Frame:
    """The frame the kernel kept; from its IP header on (raw IP) where it has no link
    header, or one Wireshark could not be told (not Ethernet)."""
    data = data or b""
    if l3 and dev_type in ETHERNET_DEVICES:
        return Frame(LINKTYPE_ETHERNET, data, length)
    return Frame(LINKTYPE_RAW, data[l3:], max(length - l3, 0))


def _text(value: object) -> str:
    return str(value).replace(" ", "_")


def comment(row: dict, stages: tuple[str, ...]) -> str:
    """The record's udptrace times and fate as ``key=value`` words, times in ns."""
    words = ["udptrace"]
    if row["pid"]:  # a receive record (--rx) has no sender
        words.append(f"pid={row['pid']} comm={_text(row['comm'])}")
    words.append(f"fate={row['fate']}")
    if row["fate"] == "dropped":
        words.append(f"drop_reason={row['drop_reason']} drop_stage={row['drop_stage']}")
    reached = [f"{s}={row[stage_column(s)]}" for s in stages
               if row.get(stage_column(s)) is not None]
    words.append("stages_ns: " + " ".join(reached) + " ;")
    for name in ("total_ns", "e2e_ns", "rx_ns"):
        if row.get(name) is not None:
            words.append(f"{name}={row[name]}")
    if row.get("rx_pid") is not None:
        words.append(f"receiver pid={row['rx_pid']} comm={_text(row['rx_comm'])}")
    elif row.get("rx_ifname") is not None:
        words.append(f"receiver dev={row['rx_ifname']}")
    return " ".join(words)


# the columns a comment reads besides the stages'
COMMENT_COLUMNS = ("pid", "comm", "fate", "drop_reason", "drop_stage", "total_ns", "e2e_ns",
                   "rx_ns", "rx_pid", "rx_comm", "rx_ifname")
FRAME_COLUMNS = ("frame", "frame_len", "frame_l3", "dev_type", "ifname", "ifindex", "netns")


def _times(recording: Recording, stages: tuple[str, ...]) -> np.ndarray:
    """Each record's frame time in CLOCK_REALTIME ns."""
    table = recording.packets
    mono = column(table, "ts_ns", 0).astype(np.int64)
    offset = np.full(table.num_rows, -1, np.int64)
    for stage in reversed([s for s in CAPTURE_STAGES if s in stages]):
        at = column(table, stage_column(stage), -1).astype(np.int64)
        offset = np.where(at >= 0, at, offset)
    samples = recording.info.get("time", {}).get("samples", [])
    if not samples:
        raise UsageError(f"{recording.path} has no clock samples: its times cannot be set in "
                         "CLOCK_REALTIME; record it again with this udptrace")
    return realtime_ns(mono + np.maximum(offset, 0), samples)


def blocks(recording: Recording) -> Iterator[bytes]:
    table = recording.packets
    missing = [c for c in FRAME_COLUMNS if c not in table.column_names]
    if missing or not recording.info.get("snaplen"):
        raise UsageError(f"{recording.path} holds no frames (recorded with --snaplen 0 or by "
                         "an older udptrace): record it again with --snaplen N")
    stages = tuple(s["name"] for s in recording.info["stages"])
    snaplen = recording.info["snaplen"]
    times = _times(recording, stages)
    order = np.argsort(times, kind="stable")  # records end in their fate's order, not the frames'
    times, table = times[order], table.take(order)
    yield section_header(f"Linux {recording.info.get('kernel', '')}")
    names = [*FRAME_COLUMNS, *COMMENT_COLUMNS,
             *(stage_column(s) for s in stages if stage_column(s) in table.column_names)]
    interfaces: dict[tuple[int, int, int], int] = {}
    for ts, row in zip(times.tolist(), table.select(
            [n for n in names if n in table.column_names]).to_pylist(), strict=True):
        frame = frame_of(row["frame"], row["frame_len"] or 0, row["frame_l3"] or 0,
                         row["dev_type"] or 0)
        key = (row["netns"], row["ifindex"], frame.linktype)
        if key not in interfaces:
            interfaces[key] = len(interfaces)
            yield interface(frame.linktype, snaplen, row["ifname"],
                            f"{row['ifname']} (ifindex {row['ifindex']}) in network namespace "
                            f"{row['netns']}")
        yield packet(interfaces[key], ts, frame.data, frame.length, comment(row, stages))


def write(recording: Recording, out: IO[bytes]) -> None:
    for block in blocks(recording):
        out.write(block)
