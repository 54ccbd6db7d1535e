"""Syscall names and what their arguments are, from maintained sources, not typed by hand.

Names and numbers come from the system's ``<asm/unistd_64.h>`` (linux-libc-dev), read
at run time, else from the same macros recorded when the package was built
(``syscall_numbers.h``, setup.py: a wheel's target may have no headers). The arguments
come from the running kernel itself: every syscall tracepoint's format
(``syscalls/sys_enter_<name>``) lists the parameters of its ``SYSCALL_DEFINE`` with their
C names and types, so ``int fd``, ``size_t len`` and ``struct sockaddr * addr`` say which
argument is a descriptor, a length or an address.
"""

from __future__ import annotations

import re
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from udptrace.errors import UdptraceError
from udptrace.kernel.tracefs import Tracefs

INCLUDE_DIRS = tuple(Path("/usr/include") / sub for sub in
                     (sysconfig.get_config_var("MULTIARCH") or "", ""))
# x86_64, ppc64, s390x, mips64 have their own table; arm64 and riscv use the generic one
UNISTD_HEADERS = ("asm/unistd_64.h", "asm-generic/unistd.h")
_DEFINE = re.compile(r"^#define\s+__NR_(\w+)\s+(\d+)\s*$", re.M)
MSGHDR_TYPES = ("struct user_msghdr *", "struct mmsghdr *")
BUILT_NUMBERS = Path(__file__).with_name("syscall_numbers.h")


def unistd_header() -> Path:
    for header in UNISTD_HEADERS:
        for directory in INCLUDE_DIRS:
            if (directory / header).is_file():
                return directory / header
    if BUILT_NUMBERS.is_file():
        return BUILT_NUMBERS
    raise UdptraceError(
        "cannot name syscalls: <asm/unistd_64.h> is not installed; install it with "
        "'apt-get install linux-libc-dev'"
    )


def syscall_names(header: Path) -> dict[int, str]:
    """Number → name, as the C library's headers define ``__NR_<name>``."""
    return {int(number): name for name, number in _DEFINE.findall(header.read_text())}


def syscall_numbers(names: Iterable[str]) -> list[int]:
    """Each name's number on this machine, -1 where it has no such syscall."""
    numbers = {name: nr for nr, name in syscall_names(unistd_header()).items()}
    return [numbers.get(name, -1) for name in names]


@dataclass(frozen=True)
class Signature:
    """A syscall's parameters and the part each plays; indexes into args[], -1 = none."""

    params: tuple[str, ...]
    fd: int = -1
    sockaddr: int = -1
    msghdr: int = -1
    output: bool = False  # the kernel fills the address: it means something only on success
    length: int = -1  # the first size_t: the buffer's length
    flags: int = -1

    @classmethod
    def parse(cls, name: str, declarations: list[str]) -> Signature:
        """From tracepoint fields such as ``int fd`` or ``struct sockaddr * addr``."""
        params = [d.rpartition(" ") for d in declarations if not d.endswith("__syscall_nr")]
        types = [t.strip() for t, _, _ in params]
        names = tuple(n for _, _, n in params)

        def first(match: list[bool]) -> int:
            return match.index(True) if True in match else -1

        sockaddr = first([t == "struct sockaddr *" for t in types])
        msghdr = first([t in MSGHDR_TYPES for t in types])
        # recvfrom, accept, getsockname: the length comes back through a pointer
        length_by_pointer = 0 <= sockaddr < len(types) - 1 and types[sockaddr + 1].endswith("*")
        return cls(
            params=names,
            fd=first([n == "fd" for n in names]),
            sockaddr=sockaddr,
            msghdr=msghdr,
            output=length_by_pointer or (msghdr >= 0 and name.startswith("recv")),
            length=first([t == "size_t" for t in types]),
            flags=first([n == "flags" for n in names]),
        )


@dataclass(frozen=True)
class SyscallTable:
    names: dict[int, str]
    signatures: dict[int, Signature]  # empty when not asked for, or without syscall tracepoints

    def name(self, nr: int) -> str:
        return self.names.get(nr, f"syscall_{nr}")

    @classmethod
    def load(cls, fs: Tracefs | None) -> SyscallTable:
        """Names always; signatures when given tracefs (the kernel may lack the tracepoints)."""
        names = syscall_names(unistd_header())
        signatures = {}
        if fs is not None:
            for nr, name in names.items():
                if fs.has_event("syscalls", f"sys_enter_{name}"):
                    fields = fs.fields("syscalls", f"sys_enter_{name}")
                    signatures[nr] = Signature.parse(name, fields)
        return cls(names, signatures)
