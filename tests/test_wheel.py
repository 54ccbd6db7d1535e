"""The wheel `./setup.sh wheel` builds works where no compiler and no system libbpf exist.

Each command runs in a private mount namespace where clang, /usr/include (libbpf-dev's and
linux-libc-dev's headers) and the system's libbpf and libelf are covered by empty bind
mounts, proven there before the command starts. The wheel and its venv are made once per
source (wheel_helpers): about 20 s on first use, nothing after.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest
from conftest import send_from, udptrace
from wheel_helpers import InstalledWheel, installed_wheel

from udptrace import provenance
from udptrace.netns import VethPair

PROOF = """
import ctypes, os, shutil, sys
for name in sys.argv[1:]:
    try:
        ctypes.CDLL(name)
    except OSError:
        continue
    sys.exit(f"hiding failed: {name} still loads")
if shutil.which("clang") or os.listdir("/usr/include"):
    sys.exit("hiding failed: clang or /usr/include is still there")
"""


def mapped_files(pid: int | str) -> set[str]:
    return {line.split(maxsplit=5)[5].strip() for line in
            Path(f"/proc/{pid}/maps").read_text().splitlines() if line.count(" ") >= 5
            and "/" in line}


def system_libraries() -> list[str]:
    """The system's libbpf and libelf, as this (source-installed) test process maps them."""
    libbpf = provenance.libbpf_in_use()
    assert not libbpf.vendored, libbpf
    libelf = [path for path in mapped_files("self") if Path(path).name.startswith("libelf")]
    assert libelf, "this process has no libelf mapped"
    return [libbpf.path, *libelf]


def hidden(argv: list[str], wheel: InstalledWheel, tmp_path: Path) -> list[str]:
    """argv in a private mount namespace without clang, headers and the system's libbpf."""
    empty_dir, empty_file = tmp_path / "empty", tmp_path / "empty-file"
    empty_dir.mkdir(exist_ok=True)
    empty_file.touch()
    clang = shutil.which("clang")
    assert clang, "clang is not installed, so hiding it proves nothing"
    dirs = [Path(os.path.realpath(clang)).parents[1], Path("/usr/include")]  # /usr/lib/llvm-N
    files = system_libraries()
    mounts = [f"mount --bind {empty_dir} {d}" for d in dirs]
    mounts += [f"mount --bind {empty_file} {shlex.quote(f)}" for f in files]
    proof = shlex.join([str(wheel.python), "-c", PROOF, "libbpf.so.1", "libelf.so.1", *files])
    script = " && ".join([*mounts, proof, 'exec "$@"'])
    return ["unshare", "--mount", "sh", "-c", script, "sh", *argv]


@pytest.fixture(scope="module")
def wheel() -> InstalledWheel:
    return installed_wheel()


def test_the_wheel_is_manylinux_with_its_own_libbpf_and_objects(wheel: InstalledWheel) -> None:
    names = zipfile.ZipFile(wheel.wheel).namelist()
    assert "-py3-none-manylinux_2_" in wheel.wheel.name
    vendored = {Path(n).name.split("-")[0] for n in names if n.startswith("udptrace.libs/")}
    assert {"libbpf", "libelf"} <= vendored, names
    for name in ("udptrace/bpf/ut_trace.bpf.o", "udptrace/bpf/objects.json",
                 "udptrace/loader/libudptrace_libbpf.so", "udptrace/pubsub/libudptrace_cycle.so"):
        assert name in names


def test_check_uses_the_wheels_libbpf_where_none_other_is(wheel: InstalledWheel,
                                                            tmp_path: Path) -> None:
    result = subprocess.run(hidden([str(wheel.udptrace), "check", "--json"], wheel, tmp_path),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["send_path_traceable"], report["verdict"]
    libbpf = report["libbpf"]
    assert libbpf["vendored"] and Path(libbpf["path"]).parent == wheel.vendored, libbpf
    assert libbpf["version"].startswith("1.")
    with zipfile.ZipFile(wheel.wheel) as archive:
        built = json.loads(archive.read("udptrace/bpf/objects.json"))
    assert report["objects"]["build_ids"] == built["objects"]
    assert report["objects"]["changed"] == []
    version = subprocess.run(hidden([str(wheel.udptrace), "--version"], wheel, tmp_path),
                             capture_output=True, text=True, timeout=120)
    assert f"(the wheel's own): {libbpf['path']}" in version.stdout, version.stderr
    assert built["objects"]["ut_trace.bpf.o"] in version.stdout


@pytest.mark.vm
def test_the_wheel_traces_exact_counts_with_its_own_libbpf(wheel: InstalledWheel,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "trace.jsonl"
    with VethPair() as net:
        tracer = subprocess.Popen(
            hidden([str(wheel.udptrace), "trace", "--netns", net.ns_a, "-d", "120",
                    "--json", str(out)], wheel, tmp_path),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        assert tracer.stdout is not None
        line = tracer.stdout.readline()
        assert line.startswith("tracing UDP sends"), line + tracer.stderr.read()
        maps = mapped_files(tracer.pid)  # the shell exec'd udptrace: this pid is the tracer
        send_from(net, 50, 0.002).wait(timeout=60)
        tracer.send_signal(signal.SIGINT)  # sooner than -d: a sender takes seconds in a VM
        _, err = tracer.communicate(timeout=60)
    assert tracer.returncode == 0, err
    *packets, summary = (json.loads(line) for line in out.read_text().splitlines())
    assert summary["type"] == "summary" and summary["lost"] == 0
    assert len(packets) == summary["records"] == 50
    assert {p["fate"] for p in packets} == {"sent"}
    libraries = {path for path in maps if Path(path).name.startswith(("libbpf", "libelf"))}
    assert libraries and {Path(path).parent for path in libraries} == {wheel.vendored}, maps


def test_syscalls_are_named_without_linux_libc_dev(wheel: InstalledWheel, tmp_path: Path) -> None:
    target = subprocess.Popen([sys.executable, "-c", "import os, sys; sys.stdin.readline(); "
                               "[os.getppid() for _ in range(5)]"],
                              stdin=subprocess.PIPE, text=True)
    tracer = subprocess.Popen(hidden([str(wheel.udptrace), "syscalls", "-p", str(target.pid),
                                      "--summary"], wheel, tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert tracer.stderr is not None and target.stdin is not None
        line = tracer.stderr.readline()
        assert line.startswith("tracing syscalls"), line + tracer.stderr.read()
        target.communicate("go\n", timeout=30)
        out, err = tracer.communicate(timeout=60)
    finally:
        for process in (tracer, target):
            process.kill()
            process.wait()
    assert tracer.returncode == 0, err
    assert re.search(r"getppid\s+│\s+5\s+│", out), out


def test_a_source_install_names_the_systems_libbpf_and_its_objects() -> None:
    result = subprocess.run(udptrace("--version"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"(the system's): {provenance.libbpf_in_use().path}" in result.stdout
    objects = resources.files("udptrace.bpf")
    for name in ("ut_trace.bpf.o", "ut_syscalls.bpf.o"):
        build_id = hashlib.sha256((objects / name).read_bytes()).hexdigest()[:16]
        assert f"{name.removesuffix('.bpf.o')} {build_id}" in result.stdout
