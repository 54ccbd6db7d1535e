"""The VM runner's own rules, checked on the host without booting: what the guest accepts
as a skip, and which host paths it binds into its own /tmp."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_vm import RT_SUBSET
from vm import boot, kernel

REPO = Path(__file__).resolve().parent.parent
SKIPPING = """
import pytest
from tests.vm.skips import kernel_cannot

@pytest.mark.vm
def test_a_broken_set_up():
    pytest.skip("no etf qdisc")

@pytest.mark.vm
@pytest.mark.skipif(True, reason="no dummy devices")
def test_a_broken_set_up_by_marker():
    pass

@pytest.mark.vm
def test_what_the_kernel_lacks():
    kernel_cannot("PREEMPT_RT has no such thing")

def test_a_host_test():
    pytest.skip("needs two CPUs")
"""


def test_in_the_guest_a_vm_test_may_skip_only_for_what_its_kernel_cannot(tmp_path: Path) -> None:
    (tmp_path / "test_skips.py").write_text(SKIPPING)
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.vm.skips", "-rA", "-q",
                          "-p", "no:cacheprovider", "-o", "markers=vm: in the VM"],
                         cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=120)
    # `FAILED test_skips.py::test_...`, `SKIPPED [1] test_skips.py:LINE: reason`
    outcomes = {words[2] if words[0] == "SKIPPED" else words[1]: words[0]
                for words in map(str.split, run.stdout.splitlines())
                if words and words[0] in ("FAILED", "ERROR", "SKIPPED")}
    assert outcomes == {
        "test_skips.py::test_a_broken_set_up": "FAILED",
        "test_skips.py::test_a_broken_set_up_by_marker": "ERROR",  # in its set-up
        "test_skips.py:16:": "SKIPPED",  # kernel_cannot, in the vm test (not in skips.py)
        "test_skips.py:19:": "SKIPPED",  # the host test
    }, run.stdout
    assert run.returncode == 1


def test_the_guest_binds_in_what_it_needs_from_the_hosts_tmp() -> None:
    paths = [Path("/tmp/clone"), Path("/tmp/clone/.venv"), Path("/var/cache/k"), Path("/tmpx")]
    assert boot.from_host_tmp(paths) == [Path("/tmp/clone")]
    job = boot._job(kernel.Kernel("6.1.0-1-amd64", Path("/var/cache/k")), [], Path("/tmp/c"), ())
    assert job.index("host_path /tmp/c\n") < job.index("cd /tmp/c\n")


def test_the_rt_subset_names_collected_vm_tests() -> None:
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "vm",
                             "-p", "no:cacheprovider", "-p", "no:hypothesispytest"], cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=False)
    collected = set(listed.stdout.splitlines())
    assert set(RT_SUBSET) <= collected, set(RT_SUBSET) - collected
    assert len(set(RT_SUBSET)) == len(RT_SUBSET)
