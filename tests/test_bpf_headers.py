"""The kernel side's headers stand in layers: each includes what it uses, so each compiles alone."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from udptrace import bpf

BPF_DIR = Path(bpf.__file__).parent
HEADERS = sorted(p.name for p in BPF_DIR.glob("*.h"))
# the machines ut_types.h has a struct pt_regs for (kprobes); elsewhere the kprobe variants
# are left out, as in the build
TARGET_ARCH = {"x86_64": "x86", "aarch64": "arm64"}


@pytest.mark.skipif(not shutil.which("clang"), reason="clang is not installed (apt-get install "
                    "clang): it compiles the BPF side at install")
@pytest.mark.parametrize("header", HEADERS)
def test_a_header_compiles_in_a_unit_of_its_own(header: str, tmp_path: Path) -> None:
    unit = tmp_path / f"only_{header}.c"
    unit.write_text(f'#include "{header}"\n')
    arch = TARGET_ARCH.get(platform.machine())
    out = subprocess.run(["clang", "-fsyntax-only", "-target", "bpf", "-Wall", "-Werror",
                          *([f"-D__TARGET_ARCH_{arch}"] if arch else []), "-I", str(BPF_DIR),
                          str(unit)], capture_output=True, text=True)
    assert out.returncode == 0, f"{header} does not compile alone:\n{out.stderr}"
