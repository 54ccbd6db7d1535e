"""A recording states its time: clock samples, the kernel's sync state, ptp4l's port."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import udptrace

from udptrace.trace import timebase
from udptrace.trace.timebase import PtpWatch, Timebase, clock_sample, parse_pmc, sync_state

PMC = Path(__file__).with_name("data") / "pmc"


def test_a_sample_brackets_each_clock_between_two_monotonic_readings() -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    sample = clock_sample()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert before <= sample["mono_ns"] <= after
    assert 0 < sample["bracket_ns"] <= after - before
    # TAI is REALTIME plus the kernel's TAI offset: the two offsets, each read at its own
    # moment, differ by exactly that, give or take their brackets
    tai_s = sync_state()["tai_offset_s"]
    assert abs(sample["tai_ns"] - sample["realtime_ns"] - tai_s * 10**9) <= sample["bracket_ns"]
    assert abs(sample["realtime_ns"] + sample["mono_ns"] - time.time_ns()) < 10**9


def busybox_adjtimex() -> dict[str, str]:
    out = subprocess.run(["busybox", "adjtimex"], capture_output=True, text=True,
                         check=True).stdout
    return {m[1]: m[2] for m in re.finditer(r"^\S*\s+([a-z. ]+):\s+(\S+)", out, re.M)}


def test_the_sync_state_is_what_adjtimex_reports() -> None:
    state = sync_state()
    other = busybox_adjtimex()  # an independent reader of the same syscall
    assert state["status"] == int(other["status"])
    assert state["synchronised"] == (not int(other["status"]) & 0x40)
    assert ("UNSYNC" in state["status_flags"]) != state["synchronised"]
    assert state["freq_ppm"] == int(other["freq.adjust"]) / 65536
    assert state["esterror_ns"] == int(other["esterror"]) * 1000
    # maxerror grows by 500 µs a second while nothing sets it
    assert abs(state["maxerror_ns"] - int(other["maxerror"]) * 1000) <= 1_000_000
    assert state["clock_state"] in timebase.CLOCK_STATES.values()


def test_ptp4l_answers_are_parsed_from_recorded_pmc_output() -> None:
    # recorded from linuxptp 3.1.1's pmc against two ptp4l instances on a veth pair
    master = parse_pmc((PMC / "master.txt").read_text())
    assert master == {"port_state": "MASTER", "port_identity": "de8fd9.fffe.3bbfe9-1",
                      "master_offset_ns": 0, "gm_present": False,
                      "gm_identity": "de8fd9.fffe.3bbfe9"}
    slave = parse_pmc((PMC / "uncalibrated.txt").read_text())
    assert slave is not None
    assert slave["port_state"] == "UNCALIBRATED"
    assert slave["master_offset_ns"] == -415
    assert slave["gm_present"] is True
    assert parse_pmc((PMC / "no-ptp4l.txt").read_text()) is None


def test_without_ptp4l_or_pmc_the_ptp_state_says_why(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # a pmc on PATH whether or not linuxptp is installed here: the socket is what is missing
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "pmc").write_text("#!/bin/sh\nexit 1\n")
    (tools / "pmc").chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    watch = PtpWatch(tmp_path / "ptp4l")
    assert watch.poll() == {"available": False,
                            "why": f"ptp4l is not running (no {tmp_path / 'ptp4l'})"}
    monkeypatch.setenv("PATH", str(tmp_path))
    assert PtpWatch(tmp_path / "ptp4l").poll()["why"].startswith("pmc is not installed")


def test_the_statement_holds_every_sample_and_a_take_only_the_new_ones() -> None:
    base = Timebase(PtpWatch(Path("/nonexistent/ptp4l")))
    base.sample()
    base.sample()
    first = base.take()
    base.sample()
    second = base.take()
    assert len(first["samples"]) == 2 and len(second["samples"]) == 1
    statement = base.statement()
    assert [s["mono_ns"] for s in statement["samples"]] == sorted(
        s["mono_ns"] for s in statement["samples"])
    assert len(statement["samples"]) == 3
    assert statement["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert statement["sync"]["status"] == sync_state()["status"]


def test_the_json_summary_states_the_time_sampled_through_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    subprocess.run(udptrace("trace", "--port", "9", "-d", "2.5", "--json", str(out)),
                   capture_output=True, check=True, timeout=60)
    summary = json.loads(out.read_text().splitlines()[-1])
    samples = summary["time"]["samples"]
    assert len(samples) >= 3  # the start, each second, the end
    mono = [s["mono_ns"] for s in samples]
    assert mono == sorted(mono) and len(set(mono)) == len(mono)
    assert summary["time"]["sync"]["status"] == sync_state()["status"]
    assert summary["time"]["ptp"]["available"] is False
