"""Build hook: compile the BPF programs (and the demo's native cycle) at package build.

`pip install .` and `pip install -e .` both run build_py; the objects are
written next to their sources so an editable install finds them too.
"""

import os
import platform
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BPF_DIR = Path(__file__).parent / "src" / "udptrace" / "bpf"
CYCLE_SOURCE = Path(__file__).parent / "src" / "udptrace" / "pubsub" / "cycle.c"
TARGET_ARCH = {"x86_64": "x86", "aarch64": "arm64", "ppc64le": "powerpc", "s390x": "s390",
               "riscv64": "riscv"}


def _stale(target: Path, sources: list[Path]) -> bool:
    return not target.exists() or target.stat().st_mtime < max(p.stat().st_mtime for p in sources)


def compile_bpf() -> None:
    clang = os.environ.get("CLANG", "clang")
    if not shutil.which(clang):
        raise SystemExit("udptrace build: clang not found; install it with 'apt-get install clang'")
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        raise SystemExit(
            "udptrace build: libbpf headers not found; install them with "
            "'apt-get install libbpf-dev'"
        )
    arch = TARGET_ARCH.get(platform.machine(), platform.machine())
    for source in sorted(BPF_DIR.glob("*.bpf.c")):
        target = source.with_suffix(".o")
        if not _stale(target, list(BPF_DIR.glob("*.[ch]"))):
            continue
        cmd = [clang, "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{arch}", "-Wall",
               "-Werror", "-I", str(BPF_DIR), "-c", str(source), "-o", str(target)]
        print(" ".join(cmd))
        subprocess.run(cmd, check=True)


def compile_cycle() -> None:
    """The shared library the demo publisher runs each cycle through (see cycle.c)."""
    target = CYCLE_SOURCE.with_name("libudptrace_cycle.so")
    if _stale(target, [CYCLE_SOURCE]):
        cmd = [os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-Wall", "-Werror",
               str(CYCLE_SOURCE), "-o", str(target)]
        print(" ".join(cmd))
        subprocess.run(cmd, check=True)


class BuildPyWithBpf(build_py):
    def run(self) -> None:
        compile_bpf()
        compile_cycle()
        super().run()


setup(cmdclass={"build_py": BuildPyWithBpf})
