"""`udptrace demo`, the README's main job: exact counts, and nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import bpf_programs
from conftest import udptrace


def namespaces_of(pid: int) -> set[str]:
    """The namespaces a udptrace process made (VethPair names them after its pid)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {name for name in (line.split()[0] for line in out.splitlines() if line.strip())
            if name.startswith(f"ut{pid % 100000}x")}


def test_a_short_demo_traces_exactly_what_was_published(tmp_path: Path) -> None:
    out = tmp_path / "demo.jsonl"
    demo = subprocess.Popen(udptrace("demo", "-d", "2", "--interval-ms", "10", "--json", str(out)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    stdout, stderr = demo.communicate(timeout=120)
    assert demo.returncode == 0, stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    packets = [obj for obj in lines if obj["type"] == "packet"]
    summary = lines[-1]
    published = summary["publisher"]["messages_sent"]
    assert published == 200
    assert len(packets) == published
    assert summary["counters"]["packets"] == published
    assert summary["counters"]["sent"] == published
    assert summary["subscriber"]["datagrams"] == published
    # end to end: every datagram from its publish cycle to the subscriber's recvfrom()
    assert summary["counters"]["received"] == published
    assert {p["fate"] for p in packets} == {"received"}
    assert all(p["e2e_ns"] > 0 and "app" in p["stages"] and "rx_done" in p["stages"]
               for p in packets)
    assert {p["pubsub"]["publisher_id"] for p in packets} == {2234}
    assert sorted(p["pubsub"]["sequence_number"] for p in packets) == list(range(published))
    assert "latency per stage" in stdout and "sendto→wire" in stdout
    page = tmp_path / "udptrace-demo.html"  # by default, in the current directory
    assert f"HTML report with plots: {page}" in stdout
    assert "Plotly.newPlot" in page.read_text()
    assert not namespaces_of(demo.pid)


def test_interrupting_the_demo_removes_everything(tmp_path: Path) -> None:
    demo = subprocess.Popen(udptrace("demo", "-d", "30"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=tmp_path)
    assert demo.stderr is not None
    status = demo.stderr.readline()  # the first status line: tracing has begun
    assert "packets" in status, status
    assert namespaces_of(demo.pid)  # its namespaces exist while it runs
    ours = bpf_programs.held_by(demo.pid)
    assert len(ours) >= 10
    time.sleep(1)
    os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    out, _err = demo.communicate(timeout=60)
    assert demo.returncode == 130
    assert "interrupted" in out
    assert not namespaces_of(demo.pid)
    assert not ours & set(bpf_programs.loaded())
