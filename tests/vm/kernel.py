"""Debian's 6.1 kernel for the test VM, in a flavour: named by apt, downloaded once, kept in a
cache.

The cache outlives test runs and clones (it is not in the repository) and keeps the newest
release of each flavour; the VM reads its modules straight from there over the shared host
root.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("UDPTRACE_VM_CACHE", "/var/cache/udptrace-vm"))
# Debian's flavours the VM boots, rt being PREEMPT_RT (the -cloud- one has no 9p): flavour →
# the metapackage naming its current release, and the packages of that flavour
FLAVOURS = {
    "generic": ("linux-image-amd64", re.compile(r"linux-image-(6\.1\.0-(\d+)-amd64)$")),
    "rt": ("linux-image-rt-amd64", re.compile(r"linux-image-(6\.1\.0-(\d+)-rt-amd64)$")),
}
# What a VM without hardware can load: networking (veth, every qdisc), filesystems (9p,
# overlay), virtio, and the libraries they depend on. The rest of the package, 230 of its
# 400 MB, is drivers for hardware the VM does not have.
KEPT = ("net", "fs", "lib", "crypto", "arch", "drivers/net", "drivers/virtio")


class KernelUnavailable(Exception):
    """apt cannot name or fetch the kernel package (no network, not a Debian 12 host...)."""


@dataclass(frozen=True)
class Kernel:
    release: str  # `uname -r` inside the VM, e.g. 6.1.0-56-amd64
    root: Path  # the package's files: boot/vmlinuz-*, lib/modules/<release>/

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.release


def _apt(*argv: str, cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600,
                                check=False)
    except FileNotFoundError as e:
        raise KernelUnavailable(f"{argv[0]} not found: not a Debian host") from e
    if result.returncode:
        raise KernelUnavailable(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def flavour_of(release: str) -> str | None:
    return next((name for name, (_, package) in FLAVOURS.items()
                 if package.match(f"linux-image-{release}")), None)


def release_to_use(flavour: str = "generic") -> str:
    """The release the flavour's metapackage depends on if it is a 6.1, else the newest 6.1
    of that flavour apt has."""
    metapackage, package = FLAVOURS[flavour]
    for word in _apt("apt-cache", "depends", metapackage).split():
        if match := package.match(word):
            return match.group(1)
    known = [package.match(n) for n in _apt("apt-cache", "pkgnames", "linux-image-6.1.0-")
             .split()]
    found = [m for m in known if m]
    if not found:
        raise KernelUnavailable(f"apt knows no {package.pattern} package "
                                "(run apt-get update on a Debian 12 host)")
    return max(found, key=lambda m: int(m.group(2))).group(1)


def obtain(flavour: str = "generic") -> Kernel:
    """The flavour's kernel, downloaded and unpacked into the cache on first use."""
    release = release_to_use(flavour)
    kernel = Kernel(release, CACHE / release)
    done = kernel.root / "complete"
    if done.exists():
        return kernel
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be fetching the same
        if not done.exists():
            _fetch(kernel)
            for stale in CACHE.iterdir():  # older releases of this flavour
                if stale.is_dir() and stale.name != release and flavour_of(stale.name) == flavour:
                    shutil.rmtree(stale)
    return kernel


def _fetch(kernel: Kernel) -> None:
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        _apt("apt-get", "download", "-q", f"linux-image-{kernel.release}", cwd=Path(work))
        (deb,) = Path(work).glob("*.deb")
        unpacked = Path(work) / "root"
        unpacked.mkdir()
        members = [f"./boot/vmlinuz-{kernel.release}",
                   *(f"./lib/modules/{kernel.release}/kernel/{d}/" for d in KEPT)]
        extract = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                                   stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(unpacked), *members], stdin=extract.stdout,
                       check=True, timeout=300)
        if extract.wait(timeout=60):
            raise KernelUnavailable(f"dpkg-deb could not read {deb.name}")
        # the package's modules.dep is made by depmod at install; busybox's depmod makes
        # the one busybox's modprobe reads in the VM (including the aliases that let the
        # kernel load veth or a qdisc on demand)
        subprocess.run(["busybox", "depmod", "-b", str(unpacked), kernel.release], check=True,
                       timeout=120)
        (unpacked / "complete").touch()
        shutil.rmtree(kernel.root, ignore_errors=True)
        unpacked.rename(kernel.root)

