"""Two hosts with a real NIC between them: the test VM publishes, this host subscribes.

The VM (Debian's 6.1 kernel, tests/vm) gets a virtio-net NIC whose other end is a tap
in a network namespace made here (qemu runs under `ip netns exec`), so the traffic
stays between the guest and that namespace. The guest records what it sends and
receives on its NIC (tests/vm/two_hosts_guest.py) while a cyclic UADP publisher there
sends to a subscriber here; this host records the namespace's receives and sends, and
sends a slower flow back, so the join can measure the guest's clock offset (its clocks
are its own: CLOCK_MONOTONIC from its boot, UTC from qemu's RTC). Midway the tap is set
down for a moment: what the guest sent meanwhile is lost between the hosts, and the
subscriber's own count of sequence gaps says how many.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import udptrace
from vm import boot, kernel
from vm.two_hosts_guest import MARK, OUT_TAG

REPO = Path(__file__).resolve().parent.parent
HOST, GUEST = "10.214.0.1", "10.214.0.2"
COUNT, INTERVAL_MS = 400, 10  # the guest's publisher: 4 s
# this host's flow back, to the UADP port too: --pubsub decodes only that one, and without
# its sequence numbers the datagrams of a flow could not be told apart
BACK_COUNT, BACK_INTERVAL_MS, BACK_PORT = 150, 20, 4840
LOSS_AFTER, LOSS_SECONDS = 100, 0.25  # the tap goes down after this many have arrived

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(os.environ.get("UDPTRACE_NO_VM", "0") not in ("", "0"),
                       reason="UDPTRACE_NO_VM is set"),
    pytest.mark.timeout(900),
]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def in_ns(ns: str, *argv: str, **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kwargs)  # type: ignore[call-overload]


def started(process: subprocess.Popen) -> subprocess.Popen:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("recording"), line + (process.stderr.read() if process.stderr else "")
    return process


class Host:
    """This host's side: the namespace with the tap, recorders, subscriber, the flow back."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.ns = f"ut2h{os.getpid() % 100000}"
        self.tap = f"{self.ns}t"[:15]
        self.processes: list[subprocess.Popen] = []
        ip("netns", "add", self.ns)
        ip("-n", self.ns, "link", "set", "lo", "up")

    def record(self) -> None:
        for name, extra in (("host-rx.parquet", ["--rx"]), ("host-tx.parquet", [])):
            self.processes.append(started(subprocess.Popen(
                udptrace("record", "-o", str(self.work / name), "--netns", self.ns, "--pubsub",
                         "-d", "600", *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)))

    def tap_up(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while subprocess.run(["ip", "-n", self.ns, "link", "show", self.tap],
                             capture_output=True).returncode:
            assert time.monotonic() < deadline, "qemu never opened its tap"
            time.sleep(0.1)
        ip("-n", self.ns, "addr", "add", f"{HOST}/24", "dev", self.tap)
        ip("-n", self.ns, "link", "set", self.tap, "up")

    def subscribe(self) -> subprocess.Popen:
        ready = self.work / "subscribed"
        sub = in_ns(self.ns, *udptrace("subscribe", f"opc.udp://{HOST}:4840/", "--json",
                                       "--ready-file", str(ready)), stdout=subprocess.PIPE,
                    text=True)
        while not ready.exists():
            time.sleep(0.05)
        self.processes.append(sub)
        return sub

    def send_back(self) -> subprocess.Popen:
        sender = in_ns(self.ns, *udptrace(
            "publish", f"opc.udp://{GUEST}:{BACK_PORT}/", "--sequence-numbers",
            "--writer-group-id", "9", "--interval-ms", str(BACK_INTERVAL_MS), "--count",
            str(BACK_COUNT), "--json"), stdout=subprocess.PIPE, text=True)
        self.processes.append(sender)
        return sender

    def plant_loss(self) -> float:
        ip("-n", self.ns, "link", "set", self.tap, "down")
        time.sleep(LOSS_SECONDS)
        ip("-n", self.ns, "link", "set", self.tap, "up")
        return LOSS_SECONDS

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.processes:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)


def watch_subscriber(sub: subprocess.Popen, host: Host, planted: list[int]) -> None:
    """Counts the guest's datagrams as they arrive; after LOSS_AFTER, the tap goes down."""
    assert sub.stdout is not None
    for seen, line in enumerate(sub.stdout, start=1):
        message = json.loads(line)
        if "summary" in message:
            planted.append(message["summary"])
            return
        if seen == LOSS_AFTER:
            host.plant_loss()


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    if missing := boot.missing_tools():
        pytest.skip(f"the test VM needs {', '.join(missing)} (./setup.sh test installs them)")
    try:
        wanted = kernel.obtain()
    except kernel.KernelUnavailable as e:
        pytest.skip(f"no Debian 6.1 kernel for the test VM: {e}")
    work = tmp_path_factory.mktemp("two-hosts")
    share = work / "guest"
    share.mkdir()
    host = Host(work)
    lines: queue.Queue[str] = queue.Queue()
    result: list[boot.VmRun] = []
    try:
        host.record()
        step = boot.Step("two-hosts", 600, [
            sys.executable, "tests/vm/two_hosts_guest.py", "--address", GUEST, "--peer", HOST,
            "--count", str(COUNT), "--interval-ms", str(INTERVAL_MS), "--back-port",
            str(BACK_PORT), "--back-seconds", str(BACK_COUNT * BACK_INTERVAL_MS / 1000 + 8)])
        qemu = ["-netdev", f"tap,id=n0,ifname={host.tap},script=no,downscript=no",
                "-device", "virtio-net-pci,netdev=n0",
                "-virtfs", f"local,path={share},mount_tag={OUT_TAG},security_model=none"]
        began = time.monotonic()
        vm = threading.Thread(target=lambda: result.append(boot.run(
            wanted, [step], REPO, echo=lines.put, qemu_args=qemu,
            launcher=["ip", "netns", "exec", host.ns])))
        vm.start()
        host.tap_up(120)
        sub = host.subscribe()
        summary: list[dict] = []
        watcher = threading.Thread(target=watch_subscriber, args=(sub, host, summary))
        watcher.start()
        marks: dict[str, float] = {}
        back: subprocess.Popen | None = None
        while vm.is_alive() or not lines.empty():
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line.startswith(MARK):
                word = line.split()[1]
                marks[word] = time.monotonic() - began
                if word == "recording":
                    back = host.send_back()
                elif word == "published":
                    time.sleep(0.5)  # the last datagrams' way to the subscriber
                    sub.send_signal(signal.SIGINT)
        vm.join()
        watcher.join(timeout=30)
        assert back is not None, (
            f"the guest never started recording; console:\n{result[0].console_tail()}"
            if result else "the VM thread died")
        back_sent = json.loads(back.communicate(timeout=60)[0])
    finally:
        host.stop()
    (run,) = result
    guest_step = run.steps.get("two-hosts")
    assert guest_step is not None and guest_step.status == 0, run.console_tail()
    guest = json.loads(guest_step.output[-1])
    out = subprocess.run(udptrace("join", *(str(p) for p in (
        share / "guest-tx.parquet", share / "guest-rx.parquet", work / "host-rx.parquet",
        work / "host-tx.parquet")), "--json", str(work / "joined.json")),
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    joined = [json.loads(line) for line in (work / "joined.json").read_text().splitlines()]
    print(f"VM two hosts: boot {run.boot_seconds:.1f} s, whole run {run.seconds:.0f} s; "
          f"marks {marks}")
    return {"guest": guest, "subscriber": summary[0], "back": back_sent, "stdout": out.stdout,
            "summary": joined[-1], "datagrams": joined[:-1], "share": share, "run": run}


def flow_to(summary: dict, daddr: str) -> dict:
    (flow,) = [f for f in summary["flows"] if f["daddr"] == daddr]
    return flow


def test_the_guest_publishers_datagrams_are_joined_and_the_loss_counted_exactly(
        two_hosts: dict) -> None:
    sent = two_hosts["guest"]["published"]["messages_sent"]
    received = two_hosts["subscriber"]["datagrams"]
    (stream,) = two_hosts["subscriber"]["streams"]
    assert sent == COUNT and 0 < sent - received == stream["lost"], two_hosts["subscriber"]
    flow = flow_to(two_hosts["summary"], HOST)
    assert flow["sent"] == COUNT
    assert flow["arrived"] == received
    assert flow["lost"] == sent - received, two_hosts["stdout"]
    assert flow["ambiguous"] == flow["dropped_receiver"] == flow["not_covered"] == 0
    (loss,) = [r for r in two_hosts["summary"]["lost_between_hosts"] if r["flow"] == flow["flow"]]
    assert loss["datagrams"] == sent - received
    assert loss["last_sequence"] - loss["first_sequence"] + 1 == loss["datagrams"]


def test_every_hop_is_at_least_zero_on_the_measured_clock_offset(two_hosts: dict) -> None:
    summary = two_hosts["summary"]
    (guest_to_host,) = [c for c in summary["clocks"] if c["sender_host"] == "guest"
                        and c["receiver_host"] != "guest"]
    assert guest_to_host["how"] == "measured from the traffic both ways"
    assert guest_to_host["claimed_error_ns"] is None  # neither clock is synchronised here
    assert guest_to_host["uncertainty_ns"] == guest_to_host["measured_error_ns"] > 0
    flow = flow_to(summary, HOST)
    assert flow["sender_stack_ns_n"] == flow["sent"]  # the lost ones too: they left
    for hop in ("sender_stack", "wire", "receiver_stack", "reader", "one_way"):
        assert flow[f"{hop}_ns_n"] >= flow["arrived"], hop
        assert flow[f"{hop}_ns_min"] >= 0, (hop, flow)
    assert flow["below_zero_within_error"] == flow["below_zero_beyond_error"] == 0
    back = flow_to(summary, GUEST)
    assert back["arrived"] + back["lost"] == back["sent"] == BACK_COUNT - (
        two_hosts["back"]["send_errors"]), (back, two_hosts["summary"]["drops"],
                                            two_hosts["summary"]["unmatched_arrivals"])
    assert back["wire_ns_min"] >= 0


def test_virtio_net_completes_transmits_from_napi_and_receives_through_gro(
        two_hosts: dict) -> None:
    tx = pq.read_table(two_hosts["share"] / "guest-tx.parquet" / "packets")
    sent = tx.filter(pc.equal(tx["fate"], "sent"))
    assert sent.num_rows >= COUNT
    # the TX completion frees each skb after the driver took it: the `free` stage
    assert sent["stage_free_ns"].null_count == 0
    assert pc.all(pc.greater_equal(sent["stage_free_ns"], sent["stage_xmit_done_ns"])).as_py()
    completions = set(sent["completion_context"].to_pylist())
    assert completions and completions <= {"net_rx", "net_tx", "sender"}, completions
    assert "net_rx" in completions  # virtio-net frees transmitted skbs in its NAPI poll
    assert set(sent["xmit_context"].to_pylist()) <= {"sender", "net_tx", "task"}
    rx = pq.read_table(two_hosts["share"] / "guest-rx.parquet" / "packets")
    arrived = rx.filter(pc.equal(rx["daddr"], GUEST))
    assert arrived.num_rows > 0 and arrived["stage_rx_driver_ns"].null_count == 0  # GRO
