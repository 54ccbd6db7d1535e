"""A pytest plugin for the guest (`-p tests.vm.skips`): a vm test that skips there fails.

On the host a vm test may skip for what this kernel lacks (fentry, etf, dummy devices):
the VM is where it runs. In the VM a skip means the guest's set-up is broken (a module
that did not load, a feature probe that failed), unless the test says that kernel cannot
run it: `kernel_cannot(why)`, the one skip the guest accepts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn

import pytest

KERNEL_CANNOT = "this kernel cannot run it: "


def kernel_cannot(why: str) -> NoReturn:
    """Skip, in the VM too: the kernel itself (its version or flavour) cannot run the test."""
    __tracebackhide__ = True  # the skip's reported place: the test, not this line
    pytest.skip(KERNEL_CANNOT + why)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not (report.skipped and item.get_closest_marker("vm")) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not reason.startswith(KERNEL_CANNOT):
        report.outcome = "failed"
        report.longrepr = (f"skipped in the test VM ({reason}): the guest's set-up is broken, "
                           "or the test must say why this kernel cannot run it "
                           "(vm.skips.kernel_cannot)")
