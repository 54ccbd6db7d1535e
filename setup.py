"""Build hook: compile the BPF programs (and the demo's native cycle) at package build.

`pip install .` and `pip install -e .` both run build_py; the objects are
written next to their sources so an editable install finds them too. A wheel
(`./setup.sh wheel`) carries the same files, built once, and is tagged for this
platform: auditwheel then vendors libbpf into it (see link_libbpf).
"""

import hashlib
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

PACKAGE = Path(__file__).parent / "src" / "udptrace"
BPF_DIR = PACKAGE / "bpf"
CYCLE_SOURCE = PACKAGE / "pubsub" / "cycle.c"
LIBBPF_LINK = PACKAGE / "loader" / "libudptrace_libbpf.so"
LIBBPF_PRINT = PACKAGE / "loader" / "libbpf_print.c"
TARGET_ARCH = {"x86_64": "x86", "aarch64": "arm64", "ppc64le": "powerpc", "s390x": "s390",
               "riscv64": "riscv"}


def _stale(target: Path, sources: list[Path]) -> bool:
    return not target.exists() or target.stat().st_mtime < max(p.stat().st_mtime for p in sources)


def _run(cmd: list[str]) -> None:
    print(" ".join(cmd))
    subprocess.run(cmd, check=True)


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
        _run([clang, "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{arch}", "-Wall",
              "-Werror", "-I", str(BPF_DIR), "-c", str(source), "-o", str(target)])


def record_objects(version: str) -> None:
    """bpf/objects.json: what `udptrace --version` and `check` report as the objects in use."""
    clang = os.environ.get("CLANG", "clang")
    compiler = subprocess.run([clang, "--version"], capture_output=True, text=True,
                              check=True).stdout.splitlines()[0]
    objects = {source.with_suffix(".o").name:
               hashlib.sha256(source.with_suffix(".o").read_bytes()).hexdigest()[:16]
               for source in sorted(BPF_DIR.glob("*.bpf.c"))}
    manifest = {"version": version, "compiler": compiler, "objects": objects}
    (BPF_DIR / "objects.json").write_text(json.dumps(manifest, indent=2) + "\n")


def compile_cycle() -> None:
    """The shared library the demo publisher runs each cycle through (see cycle.c)."""
    target = CYCLE_SOURCE.with_name("libudptrace_cycle.so")
    if _stale(target, [CYCLE_SOURCE]):
        _run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-Wall", "-Werror",
              str(CYCLE_SOURCE), "-o", str(target)])


def record_syscall_numbers() -> None:
    """kernel/syscall_numbers.h: <asm/unistd.h>'s __NR_ macros as this compiler resolves them.

    For `udptrace syscalls` where linux-libc-dev is not installed (a wheel's target).
    """
    macros = subprocess.run([os.environ.get("CC", "cc"), "-E", "-dM", "-include", "asm/unistd.h",
                             "-x", "c", "/dev/null"], capture_output=True, text=True,
                            check=True).stdout
    numbers = sorted(line for line in macros.splitlines() if line.startswith("#define __NR_"))
    (PACKAGE / "kernel" / "syscall_numbers.h").write_text("\n".join(numbers) + "\n")


def link_libbpf() -> None:
    """A library whose only dependency is libbpf.so.1, and whose only code is a filter of
    libbpf's messages (libbpf_print.c).

    udptrace opens libbpf through it (loader/libbpf.py): the dynamic loader then finds
    the libbpf this library names. A source install names the system's; in a wheel,
    auditwheel sees the dependency (it cannot see a ctypes load), copies libbpf with its
    libelf and zlib into udptrace.libs/ and points this library's RUNPATH there.
    """
    if _stale(LIBBPF_LINK, [LIBBPF_PRINT]):
        _run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-Wall", "-Werror",
              str(LIBBPF_PRINT), "-Wl,--no-as-needed", "-lbpf", "-o", str(LIBBPF_LINK)])


class BuildPyWithBpf(build_py):
    def run(self) -> None:
        compile_bpf()
        record_objects(self.distribution.get_version())
        compile_cycle()
        record_syscall_numbers()
        link_libbpf()
        super().run()


class NativeLibraries(Distribution):
    """Native files inside: installed to platlib, where auditwheel looks for them."""

    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):
    """py3-none-linux_<arch>: no Python extension (ctypes binds the libraries), any CPython."""

    def get_tag(self) -> tuple[str, str, str]:
        return "py3", "none", super().get_tag()[2]


setup(distclass=NativeLibraries, cmdclass={"build_py": BuildPyWithBpf,
                                           "bdist_wheel": PlatformWheel})
