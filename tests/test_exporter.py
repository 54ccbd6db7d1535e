"""`udptrace exporter`: scraped during real traffic, parsed with prometheus_client's parser."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import udptrace
from prometheus_client.parser import text_string_to_metric_families

from udptrace.netns import VethPair

DASHBOARD = Path(__file__).parent.parent / "grafana" / "udptrace-dashboard.json"
PORTS = (4840, 4841, 4842, 4843)
SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[1])):
    s.sendto(b"m" * 64, (sys.argv[2], 4840 + i % 4))
    time.sleep(0.002)
"""


def scrape(url: str) -> dict[str, list]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_metrics_scraped_during_traffic_parse_and_add_up() -> None:
    with VethPair() as net:
        exporter = subprocess.Popen(udptrace(
            "exporter", "--netns", net.ns_a, "--listen", "127.0.0.1:0", "-d", "30",
            "--max-label-values", "2", "--interval"), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            assert exporter.stdout is not None
            line = exporter.stdout.readline()
            found = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
            assert found, line + exporter.stderr.read()  # type: ignore[union-attr]
            url = found.group(0)
            sender = net.popen(net.ns_a, [sys.executable, "-c", SENDER, "800", net.addr_b])
            scrapes = []
            deadline = time.monotonic() + 20
            while sender.poll() is None and time.monotonic() < deadline:
                scrapes.append(scrape(url))  # while the tracer collects
                time.sleep(0.3)
            assert sender.wait(timeout=20) == 0
            time.sleep(1.3)  # a status tick: the kernel's counters reach the metrics
            final = scrape(url)
        finally:
            exporter.terminate()
            exporter.wait(timeout=20)
    assert exporter.returncode == 0
    assert len(scrapes) >= 3
    during = [sum(s.value for s in m.get("udptrace_datagrams", []) if s.name.endswith("_total"))
              for m in scrapes]
    assert during == sorted(during) and 0 < during[-1] <= 800  # growing while sent
    datagrams = [s for s in final["udptrace_datagrams"] if s.name.endswith("_total")]
    assert sum(s.value for s in datagrams) == 800
    ports = {s.labels["port"] for s in datagrams}
    assert len(ports) == 3 and "other" in ports  # two kept, the other two as "other"
    assert {s.labels["fate"] for s in datagrams} == {"sent"}
    assert {s.labels["comm"] for s in datagrams} == {"python"}
    latency = final["udptrace_stage_latency_seconds"]
    total = {s.labels["port"]: s.value for s in latency
             if s.name.endswith("_count") and s.labels["stage"] == "total"}
    assert total == {"other": 400, **{p: 200 for p in ports - {"other"}}}
    for port in ports:
        buckets = [s for s in latency if s.name.endswith("_bucket")
                   and s.labels["stage"] == "total" and s.labels["port"] == port]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts) and counts[-1] == total[port]
        assert buckets[-1].labels["le"] == "+Inf"
    drops = {(s.labels["reason"], s.labels["stage"]): s.value
             for s in final["udptrace_drops"] if s.name.endswith("_total")}
    assert drops == {("NO_SOCKET", "rx_handoff"): 800}  # nobody listens on the peer
    assert [s.value for s in final["udptrace_lost_records"]
            if s.name.endswith("_total")] == [0]
    intervals = [s for s in final["udptrace_send_interval_seconds"] if s.name.endswith("_count")]
    assert sum(s.value for s in intervals) == 799
    assert final["udptrace_send_interval_jitter_seconds"]
    # every metric the sample Grafana dashboard queries is served
    queried = set(re.findall(r"udptrace_[a-z_]+", DASHBOARD.read_text()))
    served = {s.name for samples in final.values() for s in samples}
    assert queried <= served, queried - served
    json.loads(DASHBOARD.read_text())


def test_a_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(udptrace("exporter", "--listen", f"127.0.0.1:{port}", "-d", "1"),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "in use" in result.stderr, result.stderr
