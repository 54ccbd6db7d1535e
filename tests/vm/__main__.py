"""Run pytest inside the test VM by hand, from the repository's root, as root:

    .venv/bin/python -m tests.vm [--flavour rt] tests/test_trace_send_path.py -k ipv6

boots Debian's 6.1 kernel, generic or PREEMPT_RT (fetched into the cache on first use),
runs `pytest ARGS` there with this .venv (a vm test that skips there fails:
tests/vm/skips.py), echoes the console as it goes and exits with the guest's pytest status.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import boot, kernel

MAX_SECONDS = 1800


def main(args: list[str]) -> int:
    flavour = "generic"
    if args[:1] == ["--flavour"] and len(args) > 1:
        flavour, args = args[1], args[2:]
    if flavour not in kernel.FLAVOURS:
        print(f"--flavour is one of {', '.join(kernel.FLAVOURS)}", file=sys.stderr)
        return 2
    if missing := boot.missing_tools():
        print(f"install {' '.join(missing)} first", file=sys.stderr)
        return 2
    try:
        wanted = kernel.obtain(flavour)
    except kernel.KernelUnavailable as e:
        print(e, file=sys.stderr)
        return 2
    step = boot.Step("pytest", MAX_SECONDS,
                     [sys.executable, "-m", "pytest", "-p", "tests.vm.skips", *args])
    run = boot.run(wanted, [step], Path.cwd(), echo=print)
    result = run.steps.get("pytest")
    print(f"boot {run.boot_seconds or 0:.1f} s, pytest {result.seconds if result else 0:.0f} s, "
          f"whole run {run.seconds:.0f} s", file=sys.stderr)
    return 1 if result is None or result.status is None else result.status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
