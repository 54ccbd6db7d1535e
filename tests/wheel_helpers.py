"""The wheel `./setup.sh wheel` builds, installed into a venv of its own, once per source.

Both live under build/test-wheel/SOURCE_HASH/: a run pays for them once, later runs on the
same sources not at all, and the VM's guest (which has no network for pip) finds them
there too (test_vm.py has them made before it boots).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "build" / "test-wheel"
# what goes into the wheel: a change to any of these builds a new one
WHEEL_SOURCES = ("src", "setup.py", "pyproject.toml", "setup.sh", "README.md")


@dataclass(frozen=True)
class InstalledWheel:
    wheel: Path
    venv: Path
    build_seconds: float  # ./setup.sh wheel, venv and pip install, when they were made

    @property
    def udptrace(self) -> Path:
        return self.venv / "bin" / "udptrace"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def vendored(self) -> Path:
        """Where auditwheel put the libraries it vendored, as installed."""
        return next((self.venv / "lib").glob("python3*/site-packages/udptrace.libs"))


def source_hash() -> str:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                             "--", *WHEEL_SOURCES], cwd=REPO, capture_output=True, check=True,
                            timeout=60).stdout
    digest = hashlib.sha256()
    for name in sorted(set(listed.split(b"\0")) - {b""}):
        path = REPO / name.decode()
        if path.is_file():  # a file deleted but not yet staged is still listed
            digest.update(name + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def installed_wheel() -> InstalledWheel:
    home = CACHE / source_hash()
    ready = home / "ready"
    if not ready.exists():
        shutil.rmtree(CACHE, ignore_errors=True)  # older sources' wheels serve no one now
        start = time.monotonic()
        _run([str(REPO / "setup.sh"), "wheel", str(home)])
        _run([sys.executable, "-m", "venv", str(home / "venv")])
        _run([str(home / "venv" / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
              *map(str, home.glob("udptrace-*-manylinux_*.whl"))])
        ready.write_text(f"{time.monotonic() - start:.1f}\n")
    wheel = next(home.glob("udptrace-*-manylinux_*.whl"))
    return InstalledWheel(wheel, home / "venv", float(ready.read_text()))


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{argv[:3]}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
