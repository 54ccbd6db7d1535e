"""Boot the test VM: an initramfs around the cached kernel, qemu under TCG, markers read back.

The guest shares the host's root read-only (so the repository, its .venv and the cached
modules sit at the same paths inside), runs a job of steps (init.sh) and powers off. Its
/tmp is its own, but what the job needs from the host's /tmp (a clone there, its .venv) is
bound in at the same paths. Its console is all the host gets: a step's status comes from
its `end` marker line.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .kernel import Kernel

# what init.sh needs before the host root is mounted: the 9p share over virtio, the overlay
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
MARKER = "UDPTRACE-VM "
BOOT_SECONDS = 180  # measured 10-17 s on a busy 2-vCPU host; the rest is slack
TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static", "cpio": "cpio"}
KERNEL_ARGS = (
    "console=ttyS0", "quiet",
    # panic=-1 with -no-reboot: a guest that dies ends qemu at once; a CPU soft-locked in the
    # kernel (once, for a whole 600 s step) is such a death, with its backtrace, rather than
    # a step that runs out its time in silence
    "panic=-1", "softlockup_panic=1",
    # TCG's TSC is one host clock for both vCPUs. Without these the guest reads HPET, which
    # the vDSO cannot: every clock read was a syscall (100,215 for 100k reads of a Python
    # loop, 24 µs each)
    "tsc=reliable", "clocksource=tsc",
)
# One host thread runs both vCPUs in turn. With a thread each (qemu 7.2's default) a vCPU
# running through a jump label while the other patched it stuck there: a soft lockup at
# syscall_trace_enter's sys_enter tracepoint key, once in 10-30 runs of a test that attaches
# beside busy loops, and reproduced without udptrace (clock-reading loops on both vCPUs,
# the tracepoint toggled from tracefs: stuck after 190 s, ~1,500 toggles; with the TSC
# clocksource the guest froze silently). Taking turns cannot race; with the TSC the generic
# guest ran its 22 tests in 162 s (2026-12-05), where it took 6.6 min on 2026-11-28.
ACCEL = "tcg,thread=single"


@dataclass(frozen=True)
class Step:
    """One command the guest runs; `seconds` bounds it inside the guest."""

    name: str
    seconds: int
    argv: Sequence[str]


@dataclass
class StepResult:
    name: str
    status: int | None = None  # None: the step never ended (the VM died or timed out)
    output: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class VmRun:
    kernel: str | None = None  # `uname -r` in the guest; None if it never got that far
    boot_seconds: float | None = None  # qemu start until the guest's userspace spoke
    seconds: float = 0.0  # qemu start until it exited
    timed_out: bool = False
    steps: dict[str, StepResult] = field(default_factory=dict)
    console: list[str] = field(default_factory=list)

    def console_tail(self, lines: int = 80) -> str:
        return "\n".join(self.console[-lines:])


def missing_tools() -> list[str]:
    """Debian packages the VM needs that are not installed."""
    return [package for tool, package in TOOLS.items() if not shutil.which(tool)]


def limit(steps: Sequence[Step]) -> int:
    """Seconds after which the host kills the VM, whatever the guest is doing."""
    return BOOT_SECONDS + sum(step.seconds for step in steps)


def run(kernel: Kernel, steps: Sequence[Step], cwd: Path,
        echo: Callable[[str], None] | None = None, *, qemu_args: Sequence[str] = (),
        modules: Sequence[str] = (), launcher: Sequence[str] = ()) -> VmRun:
    """Boot, run `steps` in `cwd` in order, power off; bounded by the steps' own limits.

    `qemu_args` are added to qemu's (a device, say), `modules` are loaded in the guest
    before the steps (its driver), `launcher` prefixes qemu's command: `ip netns exec NS`
    opens a tap qemu makes in a namespace of the test's."""
    with tempfile.TemporaryDirectory(prefix="udptrace-vm-") as work:
        job = _job(kernel, steps, cwd, modules)
        initrd = _initramfs(kernel, job, Path(work))
        # KVM fails or hangs on these hosts (nested); TCG's default CPU model lacks the
        # x86-64-v2 (SSE4.2) baseline of the .venv's numpy, `max` has it
        argv = ["qemu-system-x86_64", "-accel", ACCEL, "-cpu", "max", "-smp", "2",
                "-m", "2048", "-nographic", "-no-reboot", "-nic", "none",
                "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
                "-append", " ".join(KERNEL_ARGS),
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                "multidevs=remap", *qemu_args]
        return _read_console([*launcher, *argv], limit(steps), echo)


def from_host_tmp(paths: Sequence[Path]) -> list[Path]:
    """Those of `paths` under /tmp, less any inside another: what the guest's own /tmp must
    show from the host's."""
    under = sorted({p.absolute() for p in paths if p.absolute().is_relative_to("/tmp")})
    return [p for p in under if not any(p != q and p.is_relative_to(q) for q in under)]


def _job(kernel: Kernel, steps: Sequence[Step], cwd: Path, modules: Sequence[str]) -> str:
    # the job's paths: the tree, the kernel's modules and this interpreter's environment
    lines = [f"host_path {shlex.quote(str(p))}"
             for p in from_host_tmp([cwd, kernel.root, Path(sys.prefix)])]
    lines.append(f"use_modules {shlex.quote(str(kernel.modules))}")
    if modules:
        lines.append(f"load_modules {shlex.join(modules)}")
    lines.append(f"cd {shlex.quote(str(cwd))}")
    lines += [f"step {shlex.quote(s.name)} {s.seconds} {shlex.join(s.argv)}" for s in steps]
    return "\n".join(lines) + "\n"


def _initramfs(kernel: Kernel, job: str, work: Path) -> Path:
    root = work / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(shutil.which("busybox") or "busybox", root / "bin" / "busybox")
    shutil.copy(Path(__file__).with_name("init.sh"), root / "init")
    (root / "init").chmod(0o755)
    (root / "job").write_text(job)
    modules = root / "lib" / "modules" / kernel.release
    chosen = _with_dependencies(kernel.modules, BOOT_MODULES)
    for path in chosen:
        (modules / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(kernel.modules / path, modules / path)
    (modules / "modules.dep").write_text(
        "".join(f"{path}: {' '.join(needs)}\n" for path, needs in chosen.items()))
    names = "\n".join(str(p.relative_to(root)) for p in sorted(root.rglob("*")))
    initrd = work / "initramfs.cpio"
    with initrd.open("wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=names.encode(),
                       stdout=out, check=True, timeout=60)
    return initrd


def _with_dependencies(modules: Path, names: Sequence[str]) -> dict[str, list[str]]:
    """modules.dep's entries (path: the paths it needs) for `names` and all they need."""
    dep = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        path, _, needs = line.partition(":")
        dep[path] = needs.split()
    by_name = {Path(path).name.removesuffix(".ko"): path for path in dep}
    todo = [by_name[name] for name in names]
    chosen: dict[str, list[str]] = {}
    while todo:
        path = todo.pop()
        if path not in chosen:
            chosen[path] = dep[path]
            todo += dep[path]
    return chosen


def _read_console(argv: list[str], seconds: float,
                  echo: Callable[[str], None] | None) -> VmRun:
    result = VmRun()
    start = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    killer = threading.Timer(seconds, qemu.kill)
    killer.start()
    step: StepResult | None = None
    try:
        assert qemu.stdout is not None
        for raw in qemu.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            result.console.append(line)
            if echo:
                echo(line)
            at = line.find(MARKER)
            if at < 0:
                if step:
                    step.output.append(line)
                continue
            now = time.monotonic() - start
            word, *rest = line[at + len(MARKER):].split()
            if word == "kernel":
                result.kernel, result.boot_seconds = rest[0], now
            elif word == "begin":
                step = result.steps[rest[0]] = StepResult(rest[0], seconds=now)
            elif word == "end" and step:
                step.status, step.seconds = int(rest[1]), now - step.seconds
                step = None
        qemu.wait()
    finally:
        killer.cancel()
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
    result.seconds = time.monotonic() - start
    if step:  # cut short: its time is what it had
        step.seconds = result.seconds - step.seconds
    result.timed_out = result.seconds >= seconds
    return result
