"""tracefs: find it (mounting it when missing) and read tracepoint formats."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from udptrace.errors import KernelFeatureError

CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


@dataclass(frozen=True)
class Tracefs:
    root: Path
    mounted_by_us: bool

    def events(self) -> Iterator[tuple[str, str]]:
        """Every tracepoint as (category, name)."""
        for category in sorted((self.root / "events").iterdir()):
            if not category.is_dir():
                continue
            for event in sorted(category.iterdir()):
                if (event / "format").exists():
                    yield category.name, event.name

    def has_event(self, category: str, name: str) -> bool:
        return (self.root / "events" / category / name / "format").exists()

    def fields(self, category: str, name: str) -> list[str]:
        """The event's own fields as C declarations (`int fd`), common_* left out."""
        text = (self.root / "events" / category / name / "format").read_text()
        out = []
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("field:"):
                continue
            decl = line[len("field:"):].split(";", 1)[0].strip()
            if decl.split()[-1].startswith("common_"):
                continue
            out.append(decl)
        return out


@functools.cache
def tracefs() -> Tracefs:
    """The tracefs mount, mounting it at /sys/kernel/tracing when nothing is there."""
    for root in CANDIDATES:
        if (root / "events").is_dir():
            return Tracefs(root, mounted_by_us=False)
    root = CANDIDATES[0]
    result = subprocess.run(["mount", "-t", "tracefs", "nodev", str(root)],
                            capture_output=True, text=True, check=False)
    if result.returncode == 0 and (root / "events").is_dir():
        return Tracefs(root, mounted_by_us=True)
    raise KernelFeatureError(
        "tracefs is not available and could not be mounted "
        f"({result.stderr.strip() or 'mount failed'}): as root, run "
        "'mount -t tracefs nodev /sys/kernel/tracing'"
    )
