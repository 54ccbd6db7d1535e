"""The command line as a user meets it: check, list, and one-line errors for bad input."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

from conftest import send_from, start_tracer, udptrace

from udptrace.netns import VethPair
from udptrace.report.terminal import histogram_lines, linear_bound


def run(*args: str, user: str | None = None) -> subprocess.CompletedProcess:
    argv = udptrace(*args)
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_check_reports_this_machine_truthfully() -> None:
    result = run("check", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    features = report["features"]
    # this machine: lockdown=integrity refuses fentry and kprobes; tracepoints work
    assert features["tracepoint"]["ok"] and features["raw_tp"]["ok"] and features["tp_btf"]["ok"]
    assert features["btf"]["ok"] and features["ringbuf"]["ok"]
    if features["lockdown"]["detail"] != "none":
        assert not features["fentry"]["ok"] and not features["kprobe"]["ok"]
    stages = report["stages"]
    assert report["send_path_traceable"]
    assert stages["dev_queue"]["hooks"] == ["tp_btf:net_dev_queue"]
    assert stages["syscall"]["hooks"][:2] == ["tp_btf:sys_enter", "tp_btf:sys_exit"]


def test_check_table_names_every_stage() -> None:
    result = run("check")
    assert result.returncode == 0
    for stage in ("syscall", "dev_queue", "qdisc_dequeue", "xmit_done", "free"):
        assert stage in result.stdout
    assert "core send path is traceable" in result.stdout


def test_list_finds_sendto_with_fields_and_prototype() -> None:
    result = run("list", "*sendto*")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tracepoint:syscalls:sys_enter_sendto" in out
    for field in ("int fd;", "void * buff;", "size_t len;"):
        assert field in out
    assert ("int __sys_sendto(int fd, void *buff, size_t len, unsigned int flags, "
            "struct sockaddr *addr, int addr_len)") in out


def test_list_of_a_glob_that_matches_nothing_is_a_one_line_error() -> None:
    result = run("list", "*no_such_probe_anywhere*")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("udptrace: nothing")


def test_not_root_is_a_one_line_error() -> None:
    for command in (["check"], ["list", "*sendto*"], ["trace", "-d", "1"], ["demo", "-d", "1"]):
        result = run(*command, user="65534")
        assert result.returncode == 2, command
        assert result.stderr.count("\n") == 1 and "root" in result.stderr, command


def test_bad_trace_input_is_a_one_line_error_with_exit_2() -> None:
    cases = {
        ("-p", "4194000"): "no process",
        ("-i", "nosuchif9"): "no interface",
        ("--port", "70000"): "out of range",
        ("--dst", "10.1.2.3/40"): "not an address",
        ("--netns", "nosuchns"): "no network namespace",
    }
    for args, text in cases.items():
        result = run("trace", "-d", "1", *args)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1 and text in result.stderr, (args, result.stderr)


def test_linear_edges_are_spelled_alike_as_bpftrace_spells_them() -> None:
    # CI once saw [620000, 625K): 640000 is 625 KiB, but in 5 µs steps it reads as a typo
    assert histogram_lines([(620_000, 625_000, 3)], linear_bound(5000))[0].startswith(
        "[620000, 625000)")
    assert histogram_lines([(1024, 2048, 3)], linear_bound(1024))[0].startswith("[1K, 2K)")


def test_trace_linear_histograms_have_bins_of_the_asked_width(tmp_path: Path) -> None:
    with VethPair() as net:
        tracer = start_tracer("--netns", net.ns_a, "-d", "3", "--linear", "5",
                              "--json", str(tmp_path / "o.jsonl"))
        send_from(net, 100, 0.002).wait(timeout=30)
        report, _ = tracer.communicate(timeout=30)
    assert tracer.returncode == 0
    total = report[report.index("@total_ns"):].split("\n\n")[0].splitlines()[1:]
    assert total and all(line.startswith("[") for line in total)
    edges = [int(line[1:].split(",")[0]) for line in total]
    assert all(b - a == 5000 for a, b in itertools.pairwise(edges))
    assert sum(int(line.split("|")[0].split(")")[1]) for line in total) == 100
