"""What a start looks up about the kernel: the feature probes kept per boot, one kernel symbol."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from udptrace.kernel import features, symbols, tracefs


def test_feature_probes_run_once_per_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "CACHE_DIR", tmp_path)
    detect = features.detect.__wrapped__  # without the in-process cache
    fresh = detect(cached=False)
    saved = features.cache_path()
    assert saved is not None and saved.parent == tmp_path and saved.exists()

    def refused(*_: object) -> features.Probe:
        raise AssertionError("probed again although this boot's results were saved")

    monkeypatch.setattr(features, "try_program", refused)
    assert detect() == fresh
    saved.write_text('{"tracepoint": ')  # a half-written file is probed afresh, not trusted
    monkeypatch.undo()
    monkeypatch.setattr(features, "CACHE_DIR", tmp_path)
    assert detect() == fresh


def test_one_symbol_is_found_as_a_full_scan_finds_it() -> None:
    text = symbols.KALLSYMS.read_text()
    expected = next(int(line.split()[0], 16) for line in text.splitlines()
                    if line.split()[1:3] in (["t", "hrtimer_wakeup"], ["T", "hrtimer_wakeup"]))
    assert symbols.address("hrtimer_wakeup") == expected
    assert symbols.address("hrtimer_wakeu") == 0  # a prefix is not the symbol
    assert symbols.address("no_such_function_here") == 0


def test_a_fresh_boot_without_tracefs_mounted_still_proves_tracepoints(tmp_path: Path) -> None:
    # a fresh machine has no tracefs mounted; the first run after boot probes and saves
    # what it found, so a tracepoint refused for want of the mount would stay refused
    mounted = [root for root in tracefs.CANDIDATES if (root / "events").is_dir()]
    for root in mounted:
        if subprocess.run(["umount", str(root)], capture_output=True).returncode:
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(tracefs.CANDIDATES[0])],
                           capture_output=True)
            pytest.skip(f"{root} is busy: tracefs cannot be unmounted for the test")
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from udptrace.kernel import features; "
             f"features.CACHE_DIR = features.Path({str(tmp_path)!r}); "
             "f = features.detect(cached=False); print(f.tracefs.ok, f.tracepoint)"],
            capture_output=True, text=True, timeout=60, check=True).stdout
    finally:
        if not (tracefs.CANDIDATES[0] / "events").is_dir():
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(tracefs.CANDIDATES[0])],
                           check=True)
    assert probe.startswith("True Probe(ok=True"), probe
