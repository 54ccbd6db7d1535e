"""The application level: the publisher's callback as a stage, send intervals, the live log."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import records, span_sums, tracing, udptrace
from program_helpers import Program, build

from udptrace.errors import UsageError
from udptrace.netns import VethPair
from udptrace.report.intervals import kernel_flows
from udptrace.trace.uprobe_target import resolve

PORT = 4840
PERIOD_US = 10_000


@pytest.fixture(scope="module")
def publisher_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("cyclic_publisher", tmp_path_factory.mktemp("publisher"))


@pytest.fixture
def publisher(net: VethPair, publisher_binary: Path) -> Iterator[object]:
    """The test's C publisher in namespace a; `finish()` gives the callback's entry times,
    as the publisher saw them."""
    started: list[Program] = []

    def start(cycles: int, skip: int = -1, twice: int = -1, outside: int = -1) -> Program:
        p = Program(net, [publisher_binary, net.addr_b, PORT, cycles, PERIOD_US, skip, twice,
                          outside], cycles * PERIOD_US / 1e6)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def test_every_send_inside_the_callback_carries_the_app_stage(
        publisher, publisher_binary: Path) -> None:
    pub = publisher(cycles=60, twice=20, outside=40)
    with tracing(pids=(pub.pid,), uprobe=f"{publisher_binary}:publish_cb",
                 intervals=True) as (session, batches):
        pub.go()
        pub.finish()
        flows = kernel_flows(*session.intervals(), session.layout)
        snapshot = session.snapshot()
    recs = records(batches)
    layout = session.layout
    ts = recs["ts"].astype(np.int64)
    app = ts[:, layout.stage_index("app")]
    assert len(recs) == 62  # 60 cycles, one of them sending twice, and one send outside
    kernel, ours = span_sums(session, snapshot, batches, "app_to_wire")
    assert kernel == ours and kernel[0] == 61
    assert (app > 0).sum() == 61 and (app == 0).sum() == 1
    inside = ts[app > 0]
    order = [layout.stage_index(n) for n in ("app", "syscall", "dev_queue", "xmit_start",
                                              "xmit_done")]
    assert (np.diff(inside[:, order], axis=1) >= 0).all()
    # the two sends of one callback share its entry; the outside send has none
    _entries, counts = np.unique(app[app > 0], return_counts=True)
    assert sorted(counts)[-2:] == [1, 2] and (counts == 2).sum() == 1
    assert len(set(recs["syscall_id"])) == 62
    callback = [f.summary for f in flows if f.label.endswith("callback")]
    assert len(flows) == 2 and callback[0].count == 59  # 60 entries


def test_intervals_show_the_period_and_count_a_skipped_cycle_as_missed(
        publisher, publisher_binary: Path) -> None:
    pub = publisher(cycles=80, skip=40)
    with tracing(pids=(pub.pid,), uprobe=f"{publisher_binary}:publish_cb",
                 intervals=True) as (session, batches):
        pub.go()
        entries = pub.finish()
        flows = kernel_flows(*session.intervals(), session.layout)
    recs = records(batches)
    assert len(recs) == 79
    # a loaded machine wakes some cycles late too: what counts is agreeing with the truth
    truth = np.diff(entries)
    expected_missed = int((truth > 1.5 * PERIOD_US * 1000).sum())
    assert expected_missed >= 1  # the skipped cycle
    by_kind = {"callback" if f.label.endswith("callback") else "socket": f.summary for f in flows}
    for kind, summary in by_kind.items():
        assert summary.count == 78, kind
        assert abs(summary.period_ns - PERIOD_US * 1000) < 1_000_000, kind
        assert summary.missed == expected_missed, kind
        assert summary.intervals.max > 1.5 * PERIOD_US * 1000, kind
    # every packet record but the first carries its interval, the skipped one twice as long
    intervals = np.sort(recs["interval_ns"][recs["interval_ns"] > 0].astype(np.int64))
    assert len(intervals) == 78 and intervals[-1] > 15_000_000


def test_the_live_log_writes_lines_while_the_trace_runs(net: VethPair, publisher,
                                                        publisher_binary: Path) -> None:
    pub = publisher(cycles=300)
    tracer = subprocess.Popen(udptrace("trace", "-p", str(pub.pid), "-d", "10", "--events",
                                       "--uprobe", f"{publisher_binary}:publish_cb",
                                       "--json", "/dev/null"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert tracer.stdout is not None
        assert tracer.stdout.readline().startswith("tracing UDP sends")
        pub.go()
        lines = [tracer.stdout.readline() for _ in range(5)]
        assert tracer.poll() is None  # the lines came while it was still tracing
    finally:
        tracer.terminate()
        tracer.wait(timeout=10)
    for line in lines:
        assert f"{publisher_binary.name[:15]}/{pub.pid}" in line and f"{net.addr_b}:{PORT}" in line
        assert " app " in line and "syscall +" in line and "xmit_done +" in line
        assert line.rstrip().endswith("sent") or "interval" in line


def test_a_library_function_is_found_in_the_traced_process_mappings(
        publisher, publisher_binary: Path) -> None:
    pub = publisher(cycles=20)
    time.sleep(0.2)  # libc is mapped once the process runs
    target = resolve("libc:sendto", (pub.pid,))
    assert "libc" in Path(target.binary).name and target.offset > 0
    with tracing(pids=(pub.pid,), uprobe="libc:sendto") as (session, batches):
        pub.go()
        pub.finish()
    recs = records(batches)
    assert len(recs) == 20
    assert (recs["ts"][:, session.layout.stage_index("app")] > 0).all()


@pytest.mark.parametrize("case", ["missing", "not-elf", "stripped", "unknown", "malformed"])
def test_bad_uprobe_targets_get_one_line_and_exit_2(case: str, publisher_binary: Path,
                                                    tmp_path: Path) -> None:
    stripped = tmp_path / "stripped_pub"
    shutil.copy(publisher_binary, stripped)
    subprocess.run(["strip", str(stripped)], check=True)
    text = tmp_path / "notes.txt"
    text.write_text("not a program\n")
    spec, expected = {
        "missing": (f"{tmp_path}/nope:publish_cb", "no file"),
        "not-elf": (f"{text}:publish_cb", "is not an ELF file"),
        "stripped": (f"{stripped}:publish_cb", "stripped"),
        "unknown": (f"{publisher_binary}:publish_cbb", "close: publish_cb"),
        "malformed": ("publish_cb", "give BINARY:SYMBOL"),
    }[case]
    result = subprocess.run(udptrace("trace", "--uprobe", spec, "-d", "1"), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    with pytest.raises(UsageError):
        resolve(spec)


def test_check_lists_the_app_stage_as_a_uprobe_hook() -> None:
    result = subprocess.run(udptrace("check", "--json"), capture_output=True, text=True,
                            timeout=120)
    stages = json.loads(result.stdout)["stages"]
    assert stages["app"]["hooks"] == ["uprobe:entry", "uprobe:return"]
    names = list(stages)
    assert names[names.index("syscall") - 1] == "app"  # the send's first stage after a wake-up
