"""The flight recorder: a 1 kHz publisher, a real-time busy thread planted on its CPU for one
window, and `trace --trigger 'cycle>…' --snapshots DIR` keeping what happened around each
late cycle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import send_from, start_tracer, udptrace
from test_cycle import idlest_cpu, programs, start  # noqa: F401 (fixtures)

from udptrace.errors import UsageError
from udptrace.report.flight import snapshot_dirs
from udptrace.report.triggers import Triggers, parse_trigger
from udptrace.trace.decode import Packets
from udptrace.trace.layout import Layout

BUSY_MS = 80
# far above the noise of a SCHED_FIFO publisher on a shared host
THRESHOLD_MS = 25
THRESHOLD = f"cycle>{THRESHOLD_MS}ms"
# The publisher runs SCHED_FIFO at this priority, as a real-time one would: the other jobs
# of a shared host (load average 7 on 2 CPUs) delayed a SCHED_OTHER one by 50 ms.
PUBLISHER_PRIORITY = 1
# A real-time thread above it named ut_busy: from a line on stdin, 0.5 s idle, then BUSY_MS
# busy on its CPU; prints its window (CLOCK_MONOTONIC ns).
BUSY = f"""
import os, sys, time
open("/proc/self/comm", "w").write("ut_busy")
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param({PUBLISHER_PRIORITY + 1}))
sys.stdin.readline()
time.sleep(0.5)
start = time.monotonic_ns()
while time.monotonic_ns() < start + {BUSY_MS}_000_000:
    pass
print(start, time.monotonic_ns())
"""


def fly(start, tmp_path: Path, *flags: str, planted: bool = True,  # noqa: F811
        trigger: str = THRESHOLD) -> tuple[dict, list[int], int]:
    """One traced run of 1500 cycles of 1 ms; the summary's flight recorder, the busy
    window ([] if none planted), the publisher's CPU."""
    cpu = idlest_cpu()
    pub = start("cyclic_publisher", 1500, 1000, seconds=1.5)
    busy = subprocess.Popen([sys.executable, "-c", BUSY], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True) if planted else None
    out = tmp_path / "run.jsonl"
    try:
        for pid in (pub.pid, *([busy.pid] if busy else [])):
            os.sched_setaffinity(pid, {cpu})
        os.sched_setscheduler(pub.pid, os.SCHED_FIFO, os.sched_param(PUBLISHER_PRIORITY))
        tracer = start_tracer("-p", str(pub.pid), "--wakeup", "--trigger", trigger,
                              "--snapshots", str(tmp_path / "late"), "-d", "4", "--no-hist",
                              "--json", str(out), *flags)
        time.sleep(0.5)  # the tracer's own start-up over, on a shared host: no noise from it
        pub.go()
        if busy is not None:
            busy.stdin.write("go\n")
            busy.stdin.flush()
        pub.finish()
        window = [int(n) for n in busy.communicate("", timeout=10)[0].split()] if busy else []
        report, errors = tracer.communicate(timeout=60)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    assert tracer.returncode == 0, errors
    summary = json.loads(out.read_text().splitlines()[-1])
    flight = {**summary["flight_recorder"],
              "most_ns": summary["cycles"][0]["parts"]["cycle"]["max_ns"]}
    assert f"{flight['written']} snapshots in" in report
    assert errors.count("udptrace: snapshot ") == flight["written"]
    return flight, window, cpu


def check_snapshot(snapshot: dict, window: list[int], cpu: int) -> None:
    """The late cycle was due in the busy window (or just before it, and waiting for the
    CPU when the busy thread took it) and sent after it; the snapshot's timeline holds it
    and the busy thread's run on its CPU."""
    assert window[0] - 20_000_000 <= snapshot["begin_ns"] <= window[1], (snapshot, window)
    assert snapshot["end_ns"] >= window[1], (snapshot, window)
    assert snapshot["value_ns"] > THRESHOLD_MS * 1_000_000 and snapshot["cpu"] == cpu
    assert snapshot["late_part"] == "wake-up", snapshot
    assert snapshot["held_by"][0]["task"].startswith("ut_busy"), snapshot
    assert "ut_busy" in snapshot["verdict"]
    events = json.loads((Path(snapshot["path"]) / "timeline.json").read_text())["traceEvents"]
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e["ph"] == "M" and e["name"] == "thread_name"}
    busy_runs = [e for e in events if e["ph"] == "X" and e.get("cat") == "task"
                 and e["name"].startswith("ut_busy")
                 and threads[(e["pid"], e["tid"])] == f"CPU {cpu}"]
    assert busy_runs, "no run of the busy thread on the publisher's CPU"
    run_end_us = max(e["ts"] + e["dur"] for e in busy_runs)
    assert run_end_us * 1000 >= snapshot["begin_ns"]
    late = [e for e in events if e["ph"] == "X" and e.get("cat") == "packet"
            and abs(e["ts"] * 1000 - snapshot["begin_ns"]) < snapshot["value_ns"] + 1e6]
    assert late, "the late cycle's datagram is not in the timeline"
    (marker,) = [e for e in events if e.get("cat") == "trigger"]
    assert marker["ts"] * 1000 == pytest.approx(snapshot["begin_ns"], abs=1000)


def test_the_planted_windows_late_cycles_trigger_up_to_the_limit(start,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    flight, window, cpu = fly(start, tmp_path, "--max-snapshots", "3", "--holdoff", "0")
    # the cycles due in the window ran at its end: those due more than THRESHOLD_MS before
    # it were late
    assert flight["fired"] >= (BUSY_MS - THRESHOLD_MS) * 0.8, flight
    assert flight["written"] == 3 and flight["suppressed"] == flight["fired"] - 3
    for snapshot in flight["snapshots"]:
        check_snapshot(snapshot, window, cpu)
    page = tmp_path / "late.html"
    listing = subprocess.run(udptrace("report", str(tmp_path / "late"), "--html", str(page)),
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    html = page.read_text()
    for n in (1, 2, 3):
        assert f"snapshot-{n}" in listing.stdout and f"snapshot-{n}: cycle&gt;" in html
    assert listing.stdout.count("ut_busy") >= 3 and html.count("ut_busy") >= 6


def test_a_holdoff_keeps_one_snapshot_of_a_burst_and_counts_the_rest(start,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    flight, window, cpu = fly(start, tmp_path, "--holdoff", "10s")
    assert flight["written"] == 1 and flight["fired"] > 10, flight
    assert flight["suppressed"] == flight["fired"] - 1
    check_snapshot(flight["snapshots"][0], window, cpu)


def test_nothing_planted_and_a_threshold_above_the_maximum_leave_no_snapshot(
        start, tmp_path: Path) -> None:  # noqa: F811
    flight, _, _ = fly(start, tmp_path, planted=False, trigger="cycle>500ms")
    assert flight["most_ns"] < 500_000_000, flight  # the run's longest cycle
    assert flight["fired"] == flight["written"] == 0 and flight["snapshots"] == []
    assert list((tmp_path / "late").iterdir()) == []


@pytest.mark.parametrize(("text", "message"), [
    ("cyc>1ms", "no span or stage 'cyc'"),
    ("cycle>1xs", "is not a time"),
    ("cycle 1ms", "write NAME>TIME"),
    ("drop:", "needs a drop reason"),
])
def test_a_bad_trigger_is_a_one_line_error_naming_the_valid_ones(text: str,
                                                                 message: str) -> None:
    with pytest.raises(UsageError, match=message) as error:
        parse_trigger(text)
    assert "\n" not in str(error.value)


def test_triggers_parse_into_their_parts() -> None:
    assert parse_trigger("qdisc_dequeue>100us").threshold_ns == 100_000
    assert parse_trigger("cycle>1.5ms").needs == "--wakeup"
    assert parse_trigger("interval>12ms").needs == "--interval"
    assert parse_trigger("drop:qdisc_drop").reason == "QDISC_DROP"
    assert parse_trigger("missed").kind == "missed"


def fired(layout: Layout, texts: tuple[str, ...], records: np.ndarray) -> list[int]:
    triggers = Triggers(tuple(parse_trigger(t) for t in texts), layout, {6: "QDISC_DROP",
                                                                         2: "NO_SOCKET"})
    n = len(records)
    return triggers.evaluate(Packets(records, np.zeros(n, np.uint64),
                                     np.zeros(n, np.int64))).tolist()


def test_a_stages_own_time_and_a_drops_reason_fire_their_triggers(layout: Layout) -> None:
    recs = np.zeros(4, layout.record)
    dequeue, before = layout.stage_index("qdisc_dequeue"), layout.stage_index("qdisc_enqueue")
    recs["ts"][:, before] = 1_000_000
    recs["ts"][:, dequeue] = 1_000_000 + np.array([50_000, 150_000, 0, 0])
    recs["fate"] = layout.fates_by_name["sent"]
    recs["fate"][2:] = layout.fates_by_name["dropped"]
    recs["drop_reason"][2:] = (6, 2)
    assert fired(layout, ("qdisc_dequeue>100us",), recs) == [-1, 0, -1, -1]
    assert fired(layout, ("drop:QDISC_DROP", "drop"), recs) == [-1, -1, 0, 1]


def test_missed_fires_on_an_interval_over_one_and_a_half_reference_periods(
        layout: Layout) -> None:
    recs = np.zeros(9, layout.record)
    recs["pid"], recs["sport"] = 7, 4000
    recs["interval_ns"] = [0, 1_000_000, 1_000_000, 1_010_000, 990_000, 1_000_000,  # warm-up
                           1_400_000, 2_000_000, 1_000_000]
    assert fired(layout, ("missed",), recs) == [-1] * 7 + [0, -1]
    assert fired(layout, ("interval>1.5ms",), recs) == [-1] * 7 + [0, -1]


def test_record_keeps_snapshots_beside_its_recording(net, tmp_path: Path) -> None:
    """Every datagram fires 'total>0ns': two snapshots (--max-snapshots 2, no hold-off), the
    others counted, and the recording holds every datagram."""
    run, late = tmp_path / "run.parquet", tmp_path / "late"
    recorder = subprocess.Popen(udptrace("record", "-o", str(run), "--port", "4841", "-d", "4",
                                         "--trigger", "total>0ns", "--snapshots", str(late),
                                         "--max-snapshots", "2", "--holdoff", "0",
                                         "--no-hist"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    assert recorder.stdout is not None
    assert recorder.stdout.readline().startswith("recording UDP sends")
    assert send_from(net, 50, 0.01, port=4841).wait(timeout=30) == 0
    report, errors = recorder.communicate(timeout=60)
    assert recorder.returncode == 0, errors
    assert "flight recorder: 50 triggers, 2 snapshots in" in report
    assert "48 suppressed" in report
    assert [p.name for p in snapshot_dirs(late)] == ["snapshot-1", "snapshot-2"]
    assert errors.count("udptrace: snapshot ") == 2
    assert "recorded 50 packets" in report


@pytest.mark.parametrize(("args", "message"), [
    (("trace", "--trigger", "drop"), "--trigger and --snapshots go together"),
    (("trace", "--trigger", "cycle>1ms", "--snapshots", "DIR"), "needs --wakeup"),
    (("trace", "--trigger", "missed", "--snapshots", "DIR"), "needs --interval"),
    (("trace", "--trigger", "drop", "--snapshots", "DIR", "--max-snapshots", "0"),
     "at least 1"),
    (("trace", "--trigger", "drop", "--snapshots", "DIR", "--before", "soon"), "not a time"),
    (("record", "-o", "RUN", "--sched", "--trigger", "drop", "--snapshots", "DIR"),
     "do not combine"),
    (("trace", "--trigger", "drop:NO_SUCH_REASON", "--snapshots", "DIR"),
     "this kernel has no drop reason NO_SUCH_REASON; it has "),
])
def test_flight_recorder_options_are_checked_before_anything_loads(
        args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    argv = [str(tmp_path / a) if a in ("DIR", "RUN") else a for a in args]
    done = subprocess.run(udptrace(*argv), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "DIR").exists() and not (tmp_path / "RUN").exists()
