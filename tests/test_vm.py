"""The second kernel: Debian's 6.1 booted under qemu (tests/vm), where kprobes and fentry work.

One boot per kernel flavour: the guest runs `udptrace check` and then the tests marked
`vm` (on PREEMPT_RT a subset: RT_SUBSET), on the same tree and .venv as the host. A test
that fails in there, or skips without saying why that kernel cannot run it
(tests/vm/skips.py), fails `test_vm_marked_tests_pass` with the guest's pytest report.
UDPTRACE_VM_FLAVOURS names the flavours (default generic,rt). UDPTRACE_NO_VM=1 (or
`-m 'not qemu and not soak'`) skips it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import VM_SUMMARY
from vm import boot, kernel
from wheel_helpers import installed_wheel

REPO = Path(__file__).resolve().parent.parent
KERNEL_LOG = re.compile(r"^\[\s*\d+\.\d+\] ")
FLAVOURS = [f for f in os.environ.get("UDPTRACE_VM_FLAVOURS", "generic,rt").split(",") if f]
# On PREEMPT_RT what its threads change, a test per area: the send and the receive path
# with their function stages (the fentry split of both), the contexts (NET_TX run by a
# thread there) and the cycle view (every cycle's wake-up), with the FIFO priority test
# only PREEMPT_RT runs: 44-59 s together (2026-12-05). Every vm test there took 246-329 s
# and passed in 3 of 4 runs: the fourth counted 49 of 50 datagrams read in
# test_trace_reports_a_row_per_function_stage_in_pipeline_order, not yet understood.
RT_SUBSET = (
    "tests/test_function_stages.py::"
    "test_function_stages_split_the_send_and_receive_paths_in_pipeline_order[fentry]",
    "tests/test_trace_contexts.py::"
    "test_packets_a_shaper_held_leave_from_the_net_tx_softirq_after_a_measured_wait",
    "tests/test_cycle.py::test_every_cycle_carries_the_wakeup_that_started_it",
    "tests/test_cycle.py::"
    "test_on_preempt_rt_a_fifo_publisher_wakes_on_time_beside_a_cpu_hog_not_beside_a_higher_fifo",
)


def guest_steps(tests: list[str] | tuple[str, ...], seconds: int = 600) -> list[boot.Step]:
    python = sys.executable  # the repo's .venv: the guest sees the host's root at /
    return [
        boot.Step("check", 120, [python, "-m", "udptrace", "check", "--json"]),
        # 3-7 min for today's selection on a busy 2-vCPU host. Hypothesis' plugin imports
        # it whole: seconds on the host, 40-100 times that in the emulated CPU. A test that
        # outlives its timeout gets its threads' stacks printed even when stuck in C (the
        # signal method printed nothing in a PREEMPT_RT hang).
        boot.Step("pytest", seconds, [python, "-m", "pytest", "-p", "tests.vm.skips", "-m", "vm",
                                      "-q", "-rfEs", "--durations=8", "--color=no",
                                      "-o", "timeout_method=thread",
                                      "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                                      *tests]),
    ]


pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(os.environ.get("UDPTRACE_NO_VM", "0") not in ("", "0"),
                       reason="UDPTRACE_NO_VM is set"),
    # pytest-timeout counts the boot (module fixture) against the first test; the VM's own
    # limit ends it first
    pytest.mark.timeout(boot.limit(guest_steps([])) + 120),
]


def guest_tests(flavour: str) -> list[str] | tuple[str, ...]:
    """What the guest runs: every file with vm tests, or on PREEMPT_RT its subset."""
    return RT_SUBSET if flavour == "rt" else files_with_vm_tests()


def guest_seconds(flavour: str) -> int:
    """The guest's pytest limit: RT_SUBSET took 100-155 s here, a hang must not cost 10 min."""
    return 400 if flavour == "rt" else 600


def files_with_vm_tests() -> list[str]:
    """Collected here in 3 s: the guest then imports only these (the whole suite took 2 min)."""
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "vm",
                             "-p", "no:cacheprovider", "-p", "no:hypothesispytest"], cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=False)
    files = sorted({line.split("::")[0] for line in listed.stdout.splitlines() if "::" in line})
    assert files, f"no test is marked vm:\n{listed.stdout}{listed.stderr}"
    return files


@pytest.fixture(scope="module", params=FLAVOURS)
def vm_kernel(request: pytest.FixtureRequest) -> kernel.Kernel:
    if missing := boot.missing_tools():
        pytest.skip(f"the test VM needs {', '.join(missing)} (./setup.sh test installs them)")
    try:
        return kernel.obtain(request.param)
    except kernel.KernelUnavailable as e:
        pytest.skip(f"no Debian 6.1 {request.param} kernel for the test VM: {e}")


@pytest.fixture(scope="module")
def vm(request: pytest.FixtureRequest, vm_kernel: kernel.Kernel) -> boot.VmRun:
    installed_wheel()  # test_wheel.py's vm test runs it in the guest, which has no pip index
    flavour = kernel.flavour_of(vm_kernel.release) or "generic"
    run = boot.run(vm_kernel, guest_steps(guest_tests(flavour), guest_seconds(flavour)), REPO)
    line = summary(vm_kernel, run)
    request.config.stash.setdefault(VM_SUMMARY, []).append(line)
    print(line)
    return run


def summary(wanted: kernel.Kernel, run: boot.VmRun) -> str:
    if run.kernel is None:
        return f"VM: {wanted.release}: the guest never started ({run.seconds:.0f} s)"
    tests = run.steps.get("pytest")
    return (f"VM: kernel {run.kernel} (qemu TCG), booted in {run.boot_seconds:.1f} s; "
            f"vm tests: {outcome(tests)} ({tests.seconds if tests else 0:.0f} s); "
            f"whole run {run.seconds:.0f} s" + (" (killed at its limit)" if run.timed_out else ""))


def outcome(tests: boot.StepResult | None) -> str:
    """pytest's last line (`12 passed in 250.1s`), or why there is none."""
    if tests is None:
        return "did not run"
    last = next((line for line in reversed(tests.output) if line.strip()), "no output")
    return last.strip(" =")


def step_output(run: boot.VmRun, name: str) -> str:
    """The step's output, or a failure with the console's end when it never finished."""
    step = run.steps.get(name)
    if step is None or step.status is None:
        why = "timed out" if run.timed_out else "did not finish"
        pytest.fail(f"the VM's {name} step {why}; console:\n{run.console_tail(250)}",
                    pytrace=False)
    return "\n".join(line for line in step.output if not KERNEL_LOG.match(line))


def test_the_vm_runs_debian_6_1(vm: boot.VmRun, vm_kernel: kernel.Kernel) -> None:
    assert vm.kernel == vm_kernel.release, vm.console_tail()
    assert vm.kernel.startswith("6.1.0-")


def test_check_in_the_vm_finds_fentry_and_kprobes(vm: boot.VmRun) -> None:
    # what this host's lockdown refuses: proof the tests below ran on the other kernel
    report = json.loads(step_output(vm, "check"))
    features = report["features"]
    assert features["lockdown"]["detail"] == "none"
    for feature in ("fentry", "kprobe", "tp_btf", "raw_tp", "btf", "ringbuf"):
        assert features[feature]["ok"], (feature, features[feature])
    assert report["send_path_traceable"]


def test_vm_marked_tests_pass(vm: boot.VmRun) -> None:
    output = step_output(vm, "pytest")
    if vm.steps["pytest"].status != 0:
        pytest.fail(f"on {vm.kernel}: {outcome(vm.steps['pytest'])}\n{output}", pytrace=False)
