"""What a start looks up about the kernel: the feature probes kept per boot, one kernel symbol."""

from __future__ import annotations

from pathlib import Path

import pytest

from udptrace.kernel import features, symbols


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
