"""record, report, the HTML page and the Perfetto timeline, from real packets in namespaces."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import send_from, start_run, udptrace
from PIL import Image

from udptrace import cli, extras
from udptrace.kernel import features as kernel_features
from udptrace.netns import VethPair
from udptrace.stages import STAGES
from udptrace.trace import sched as trace_sched

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")


def tc(net: VethPair, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", net.ns_a, "tc", *args], check=True,
                   capture_output=True)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(udptrace(*args), capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One recorded run with --sched: a burst into a tbf qdisc too small for it (queueing,
    overlapping packets, qdisc drops), then paced datagrams; nobody listens on the peer."""
    path = tmp_path_factory.mktemp("recorded") / "run.parquet"
    with VethPair() as net:
        tc(net, "qdisc", "add", "dev", net.if_a, "root", "tbf", "rate", "2mbit", "burst",
           "3000", "limit", "8000")
        recorder = start_run("record", "-o", str(path), "--netns", net.ns_a, "--sched", "-d", "30")
        send_from(net, 60, 0.0, 600).wait(timeout=30)
        send_from(net, 150, 0.004, 64).wait(timeout=30)
        time.sleep(0.5)
        recorder.send_signal(signal.SIGINT)
        out, err = recorder.communicate(timeout=30)
    assert recorder.returncode == 0, err
    return path, out


def table_rows(text: str, title: str) -> dict[str, list[str]]:
    """A rich table's rows by their first cell."""
    lines = text[text.index(title):].splitlines()
    rows = {}
    for line in lines[1:]:
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if line.startswith("└"):
            break
        if cells and cells[0] and not line.startswith(("┏", "┡", "┃")):
            rows[cells[0]] = cells
    return rows


def test_a_recording_holds_every_packet_with_its_stages_and_the_runs_metadata(
        recording: tuple[Path, str]) -> None:
    path, _ = recording
    packets = pq.read_table(path / "packets")  # the directory reads as one table
    parts = sorted((path / "packets").glob("part-*.parquet"))
    info = json.loads(pq.read_schema(parts[-1]).metadata[b"udptrace"])
    assert info["final"] and info["kernel"] == os.uname().release
    assert [s["name"] for s in info["stages"]] == [s.name for s in STAGES]
    assert all(s["meaning"] and s["hooks"] for s in info["stages"])
    assert info["filters"]["netns"] and info["sched"]
    counters = info["counters"]
    assert packets.num_rows == info["records"] == counters["packets"] - counters["lost"]
    assert counters["packets"] == 210
    fate = packets["fate"].to_numpy(zero_copy_only=False)
    dropped = packets.filter(pa.array(fate == "dropped"))
    assert dropped.num_rows > 0 and counters["dropped"] == dropped.num_rows
    assert set(dropped["drop_reason"].to_pylist()) <= {"QDISC_DROP", "QDISC_OVERLIMIT"}
    sent = packets.filter(pa.array(fate == "sent"))
    assert sent["total_ns"].null_count == 0
    assert sent["stage_syscall_ns"].to_pylist() == [0] * sent.num_rows
    waited = np.array(sent["stage_qdisc_dequeue_ns"].to_pylist(), dtype=float)
    assert np.nanmax(waited) > 1e6  # the burst queued in tbf for milliseconds
    xmit = np.array(sent["stage_xmit_done_ns"].to_pylist())
    assert (xmit == np.array(sent["total_ns"].to_pylist())).all()
    sched = pq.read_table(path / "sched")
    kinds = set(sched["kind"].to_pylist())
    assert {"switch", "softirq_entry", "softirq_exit"} <= kinds
    assert set(sched["cpu"].to_pylist()) <= set(packets["cpu"].to_pylist())


def test_report_recomputes_the_live_tables_from_every_record(
        recording: tuple[Path, str]) -> None:
    path, live = recording
    result = run("report", str(path), "--no-hist")
    assert result.returncode == 0, result.stderr
    assert "exact percentiles, from every record" in result.stdout
    recorded = table_rows(result.stdout, "latency per stage")
    kernel = table_rows(live, "latency per stage")
    assert set(recorded) == set(kernel) >= {"send_syscall", "dev_queue", "qdisc_dequeue",
                                            "total"}
    for stage, cells in kernel.items():
        # count, min and max are exact in the kernel too: the file must agree to the digit
        assert recorded[stage][2] == cells[2], stage
        assert recorded[stage][3] == cells[3] and recorded[stage][-2] == cells[-2], stage
    assert table_rows(result.stdout, "drops") == table_rows(live, "drops")
    histograms = run("report", str(path), "--linear", "100").stdout
    total = histograms[histograms.index("@total_ns"):].split("\n\n")[0].splitlines()[1:]
    assert sum(int(line.split("|")[0].split(")")[1]) for line in total) == int(
        kernel["total"][2])


def test_report_counts_where_the_driver_ran_like_the_live_run(
        recording: tuple[Path, str]) -> None:
    path, live = recording
    result = run("report", str(path), "--no-hist")
    assert result.returncode == 0, result.stderr
    recorded, kernel = table_rows(result.stdout, "where it ran"), table_rows(live, "where it ran")
    assert "NET_TX softirq" in kernel  # tbf held the burst: the softirq sent it
    # counts and the exact maximum agree; percentiles differ within the kernel's buckets
    assert {k: (v[1], v[2], v[-1]) for k, v in recorded.items()} == {
        k: (v[1], v[2], v[-1]) for k, v in kernel.items()}


def test_a_killed_recording_keeps_every_complete_second(tmp_path: Path) -> None:
    path = tmp_path / "killed.parquet"
    with VethPair() as net:
        recorder = start_run("record", "-o", str(path), "--netns", net.ns_a, "-d", "60")
        sender = send_from(net, 2000, 0.005)
        deadline = time.monotonic() + 10
        while len(list((path / "packets").glob("part-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        recorder.kill()  # SIGKILL: nothing gets to close a file
        recorder.wait(timeout=10)
        sender.kill()
        sender.wait(timeout=10)
    result = run("report", str(path), "--no-hist")
    assert result.returncode == 0, result.stderr
    assert "no final part (the run was killed)" in result.stdout
    rows = pq.read_table(path / "packets").num_rows
    assert 0 < rows < 2000
    assert table_rows(result.stdout, "latency per stage")["total"][2] == str(rows)


def test_the_html_report_renders_its_plots_in_chromium(recording: tuple[Path, str],
                                                       tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "the HTML test needs Debian's chromium: ./setup.sh test installs it"
    path, _ = recording
    page = tmp_path / "report.html"
    result = run("report", str(path), "--html", str(page), "--no-hist")
    assert result.returncode == 0, result.stderr
    assert page.stat().st_size > 1_000_000  # plotly.js is inlined: the page works offline
    assert "<script src=" not in page.read_text()
    shot = tmp_path / "report.png"
    browser = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1300,2400", "--hide-scrollbars", "--virtual-time-budget=3000",
         "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=90)
    dom = browser.stdout
    for div in ("histograms", "over-time", "breakdown", "drops", "intervals"):
        rendered = re.search(rf'id="{div}"[^>]*class="[^"]*js-plotly-plot', dom)
        assert rendered, f"plot {div} did not render"
    assert dom.count('class="main-svg"') >= 10
    assert not re.search(r"<html[^>]*data-errors", dom)  # the page's error hook caught none
    console = [line for line in browser.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "Error" in line or "Uncaught" in line], console
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (2400, 1300)
    inked = (image < 200).any(axis=2).mean()
    colours = len(np.unique(image.reshape(-1, 3), axis=0))
    assert inked > 0.03 and colours > 50, (inked, colours)


def nests(slices: list[dict]) -> bool:
    """Complete events on one track: each either inside the one open before it or after it."""
    open_ends: list[float] = []
    ns = 1e-3  # in µs: the times are whole ns; sums of floats near 2e10 µs (5 h up) err by ~4e-6
    for s in sorted(slices, key=lambda e: (e["ts"], -e["dur"])):
        while open_ends and open_ends[-1] <= s["ts"] + ns:
            open_ends.pop()
        if open_ends and s["ts"] + s["dur"] > open_ends[-1] + ns:
            return False
        open_ends.append(s["ts"] + s["dur"])
    return True


def test_the_perfetto_timeline_nests_each_packets_stages(recording: tuple[Path, str],
                                                         tmp_path: Path) -> None:
    path, _ = recording
    out = tmp_path / "run.json"
    result = run("report", str(path), "--perfetto", str(out), "--no-hist")
    assert result.returncode == 0, result.stderr
    trace = json.loads(out.read_text())
    events = trace["traceEvents"]
    for e in events:
        assert {"ph", "pid", "tid", "name"} <= set(e), e
        assert e["ph"] in {"X", "i", "M"}
        if e["ph"] == "X":
            assert e["dur"] >= 0 and isinstance(e["ts"], float | int)
    names = {e["args"]["name"] for e in events if e["name"] in ("process_name", "thread_name")}
    assert "CPUs" in names and any(n.startswith("socket python") for n in names)
    tracks: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            tracks[(e["pid"], e["tid"])].append(e)
    assert all(nests(slices) for slices in tracks.values())
    packets = [e for e in events if e.get("cat") == "packet"]
    assert len(packets) == pq.read_table(path / "packets").num_rows
    queued = max(packets, key=lambda e: len(e["args"]["stages_ns"]))
    stages = sorted((e for e in tracks[(queued["pid"], queued["tid"])]
                     if e.get("cat") == "stage" and queued["ts"] <= e["ts"]
                     and e["ts"] + e["dur"] <= queued["ts"] + queued["dur"] + 1e-3),
                    key=lambda e: e["ts"])
    assert [s["name"] for s in stages] == [n for n in queued["args"]["stages_ns"]][1:]
    for a, b in itertools.pairwise(stages):  # each stage starts where the last ended
        assert abs(a["ts"] + a["dur"] - b["ts"]) < 2e-3
    drops = [e for e in events if e["ph"] == "i"]
    assert drops and all(e["name"] == "drop: QDISC_DROP" or "QDISC" in e["name"] for e in drops)
    assert {e["cat"] for e in events if e["ph"] == "X"} >= {"task", "softirq", "syscall"}


def test_bad_recordings_and_output_paths_are_one_line_errors(
        recording: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = recording
    truncated = tmp_path / "truncated.parquet"
    shutil.copytree(path, truncated)
    part = sorted((truncated / "packets").glob("part-*"))[0]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), foreign)
    text = tmp_path / "text.parquet"
    text.write_text("not parquet\n")
    cases = {
        ("report", str(tmp_path / "missing.parquet")): "no recording",
        ("report", str(truncated)): "truncated or not a Parquet file",
        ("report", str(foreign)): "not a udptrace recording",
        ("report", str(text)): "truncated or not a Parquet file",
        ("report", str(tmp_path)): "not a udptrace recording",
        ("report", str(path), "--html", "/nonexistent/dir/r.html"): "cannot write",
        ("report", str(path), "--perfetto", str(tmp_path)): "is a directory",
        ("record", "-o", str(path), "-d", "1"): "already exists",
        ("record", "-o", "/nonexistent/dir/run.parquet", "-d", "1"): "cannot write",
        ("record", "-o", "/proc/run.parquet", "-d", "1"): "cannot write",
        ("record", "-o", str(tmp_path / "new.parquet"), "-p", "4194000"): "no process",
        ("trace", "-d", "1", "--html", "/proc/r.html"): "cannot write",
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, message in cases.items():  # in this process: the CLI's own entry point
        code = cli.main(list(args))
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and message in err, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing half-written


def test_trace_html_writes_the_page_after_the_run(tmp_path: Path) -> None:
    page = tmp_path / "trace.html"
    with VethPair() as net:
        tracer = start_run("trace", "--netns", net.ns_a, "-d", "2", "--html", str(page))
        send_from(net, 50, 0.002).wait(timeout=30)
        out, err = tracer.communicate(timeout=30)
    assert tracer.returncode == 0, err
    assert f"HTML report: {page}" in out
    html = page.read_text()
    assert "Plotly.newPlot" in html and 'id="histograms"' in html
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_missing_extra_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    real = extras.importlib.util.find_spec
    monkeypatch.setattr(extras.importlib.util, "find_spec",
                        lambda name: None if name == "pyarrow" else real(name))
    assert cli.main(["report", "run.parquet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'udptrace[record]'" in err


def test_sched_events_fall_back_to_raw_tp(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = dataclasses.replace(kernel_features.detect(),
                                  tp_btf=kernel_features.Probe(False, "refused for the test"))
    monkeypatch.setattr(trace_sched, "detect", lambda: refused)
    with trace_sched.SchedSession() as session:
        assert {str(h).split(":")[0] for h in session.hooks} == {"raw_tp"}
        session.watch(range(os.cpu_count() or 1))
        deadline = time.monotonic() + 5
        events = session.read()
        while not len(events) and time.monotonic() < deadline:
            time.sleep(0.1)
            events = session.read()
    kinds = {session.kinds[k] for k in events["kind"]}
    assert "switch" in kinds
    switches = events[events["kind"] == next(k for k, v in session.kinds.items()
                                             if v == "switch")]
    assert any(c.rstrip(b"\0") for c in switches["comm"])


def test_a_pubsub_recording_reports_its_writer_groups(tmp_path: Path) -> None:
    path = tmp_path / "pubsub.parquet"
    with VethPair() as net:
        recorder = start_run("record", "-o", str(path), "--netns", net.ns_a, "--pubsub", "-d", "30")
        publisher = net.run(net.ns_a, udptrace("publish", "-i", net.if_a, "--count", "50",
                                               "--interval-ms", "2", "--sequence-numbers"),
                            capture_output=True, timeout=60)
        assert publisher.returncode == 0, publisher.stderr
        time.sleep(0.3)
        recorder.send_signal(signal.SIGINT)
        _, err = recorder.communicate(timeout=30)
    assert recorder.returncode == 0, err
    packets = pq.read_table(path / "packets")
    assert sorted(packets["pubsub_sequence_number"].to_pylist()) == list(range(50))
    assert {tuple(w) for w in packets["pubsub_dataset_writer_ids"].to_pylist()} == {(62541,)}
    result = run("report", str(path), "--no-hist")
    assert result.returncode == 0, result.stderr
    groups = table_rows(result.stdout, "latency per PubSub writer group")
    assert groups["2234"][1:5] == ["100", "62541", "50", "0"]


def test_each_part_carries_the_clock_samples_of_its_second(recording: tuple[Path, str]) -> None:
    from udptrace.report.parquet import open_recording
    path, _ = recording
    parts = sorted((path / "packets").glob("part-*.parquet"))
    blocks = [json.loads(pq.read_schema(p).metadata[b"udptrace"])["time"] for p in parts]
    assert all(b["samples"] and b["sync"]["status"] >= 0 for b in blocks)
    merged = open_recording(path).info
    samples = merged["time"]["samples"]
    assert [s for b in blocks for s in b["samples"]] == samples
    mono = [s["mono_ns"] for s in samples]
    assert mono == sorted(mono) and len(set(mono)) == len(mono)
    # the first sample is taken once the programs are attached, the last at the end: the
    # recorded packets lie between them
    first_packet = pq.read_table(path / "packets")["ts_ns"].to_numpy().min()
    assert mono[0] < first_packet < mono[-1]
    assert merged["host"]["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
