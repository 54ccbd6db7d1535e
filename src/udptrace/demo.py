"""The demo: a traced OPC UA PubSub publisher in a private network, start to finish.

Two namespaces joined by a veth; `udptrace subscribe` in one, `udptrace
publish` (the tutorial publisher's defaults, multicast) in the other, and
every datagram of the publisher's namespace followed end to end, from its
publish cycle through sendto() and the wire to the subscriber's recvfrom(),
from before its first datagram until after its last. Everything created is
removed on every way out, including Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from udptrace.errors import PermissionProblem, UdptraceError, require_root
from udptrace.kernel.features import detect
from udptrace.kernel.plan import StagePlan, plans_to_trace
from udptrace.netns import VethPair
from udptrace.pubsub import cycle
from udptrace.pubsub.url import DEFAULT_URL
from udptrace.report.fanout import PacketOutputs
from udptrace.report.intervals import Flow, kernel_flows
from udptrace.report.jsonl import JsonLines, summary_object
from udptrace.report.pubsub_groups import PubSubGroups
from udptrace.stages import BOTH
from udptrace.trace import run
from udptrace.trace.layout import Layout
from udptrace.trace.options import UADP_PORT, TraceOptions
from udptrace.trace.session import TraceSession

if TYPE_CHECKING:  # pyarrow, under it, is an optional extra
    from udptrace.report.recorder import Recorder

READY_TIMEOUT_S = 10.0
DRAIN_S = 0.3


@dataclass(frozen=True)
class DemoSettings:
    duration_s: float = 10.0
    interval_ms: float = 10.0
    url: str = DEFAULT_URL


@dataclass(frozen=True)
class DemoResult:
    trace: run.TraceResult
    groups: PubSubGroups
    publisher: dict[str, object]
    subscriber: dict[str, object]
    layout: Layout
    plans: list[StagePlan]
    drop_names: dict[int, str]
    intervals: list[Flow]  # the publisher's socket and its cycle function


def _udptrace(*args: str) -> list[str]:
    return [sys.executable, "-m", "udptrace", *args]


def require_traceable() -> None:
    """The demo's one precondition, checked before anything is created."""
    try:
        require_root()
    except PermissionProblem as e:
        raise PermissionProblem(f"{e}; 'sudo udptrace check' shows what this machine allows") \
            from None
    plans_to_trace(detect(), BOTH)


def _last_json(text: str) -> dict[str, object]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def _stop(process: subprocess.Popen) -> None:
    """End a child cleanly: on SIGINT it prints its summary and exits."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _summary(process: subprocess.Popen, output: Path) -> dict[str, object]:
    _stop(process)
    return _last_json(output.read_text()) if output.exists() else {}


def run_demo(settings: DemoSettings, stop: threading.Event,
             on_status: run.StatusCallback | None = None,
             json_file: IO[bytes] | None = None,
             recorder_for: Callable[[TraceSession], Recorder] | None = None) -> DemoResult:
    """``recorder_for`` (the HTML report) records the run from the session it is given."""
    require_traceable()
    count = max(1, round(settings.duration_s * 1000 / settings.interval_ms))
    with ExitStack() as stack:
        net = stack.enter_context(VethPair())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="udptrace-demo-")))
        ready = workdir / "subscriber.ready"
        # children write to files: a pipe nobody reads until the end would stall them
        sub_out, pub_out = workdir / "subscriber.jsonl", workdir / "publisher.json"
        subscriber = stack.enter_context(net.popen(net.ns_b, _udptrace(
            "subscribe", settings.url, "-i", net.if_b, "--json", "--ready-file", str(ready)),
            stdout=stack.enter_context(sub_out.open("w")), stderr=subprocess.DEVNULL))
        stack.callback(_stop, subscriber)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.exists():
            if subscriber.poll() is not None or time.monotonic() > deadline:
                raise UdptraceError("the demo subscriber did not start")
            time.sleep(0.02)
        # the publisher runs each cycle through a native function: the app stage's hook
        session = stack.enter_context(TraceSession(TraceOptions(
            netns=net.ns_a, ports=(UADP_PORT,), stream=True, payload_port=UADP_PORT,
            uprobe=cycle.UPROBE, intervals=True, e2e=True)))
        drop_names = session.drop_reason_names()
        json_out = (JsonLines(json_file, session.layout, drop_names, pubsub=True)
                    if json_file else None)
        recorder = recorder_for(session) if recorder_for else None
        groups = PubSubGroups()
        outputs = PacketOutputs(session.layout, drop_names, stop, json=json_out, groups=groups,
                                recorder=recorder)

        publisher = stack.enter_context(net.popen(net.ns_a, _udptrace(
            "publish", settings.url, "-i", net.if_a, "--interval-ms", f"{settings.interval_ms:g}",
            "--count", str(count), "--sequence-numbers", "--native-cycle", "--json"),
            stdout=stack.enter_context(pub_out.open("w")), stderr=subprocess.DEVNULL))
        stack.callback(_stop, publisher)

        def watch_publisher() -> None:
            publisher.wait()
            time.sleep(DRAIN_S)  # the last datagram's records reach the ring buffer
            stop.set()

        threading.Thread(target=watch_publisher, daemon=True).start()
        result = run.run(session, None, stop, outputs, outputs.status(on_status))
        if outputs.failure is not None:
            raise outputs.failure
        flows = kernel_flows(*session.intervals(), session.layout)
        publisher_summary = _summary(publisher, pub_out)
        time.sleep(DRAIN_S)
        subscriber_summary = _summary(subscriber, sub_out).get("summary", {})
        interrupted = publisher_summary.get("messages_sent") != count
        trace = dataclasses.replace(result, interrupted=interrupted)
        if recorder is not None:
            recorder.finish(trace)
        if json_out is not None:
            json_out.write_summary(summary_object(
                trace.snapshot, session.layout, drop_names, trace.records,
                publisher=publisher_summary, subscriber=subscriber_summary))
        return DemoResult(trace, groups, publisher_summary, subscriber_summary, session.layout,
                          session.plans, drop_names, flows)
