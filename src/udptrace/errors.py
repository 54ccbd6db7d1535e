"""Exceptions with messages a user can act on.

Every error the CLI reports is one of these; its text is printed as a single
line (``udptrace: <message>``) and maps to an exit code.
"""

from __future__ import annotations

import os


class UdptraceError(Exception):
    """Base class: something the user can fix; printed as one line, exit code 2."""

    exit_code = 2


class UsageError(UdptraceError):
    """Bad command-line input: unknown pid, interface, port, filter."""


class PermissionProblem(UdptraceError):
    """Not root / missing capabilities."""


class KernelFeatureError(UdptraceError):
    """The kernel lacks something udptrace needs (BTF, tracefs, a hook)."""


class BpfUnavailableError(KernelFeatureError):
    """libbpf or the compiled BPF objects cannot be found."""


class BpfError(UdptraceError):
    """A libbpf call failed; names the object/program and the errno text."""

    def __init__(self, what: str, err: int, detail: str = "") -> None:
        self.what = what
        self.errno = abs(err)
        self.detail = detail
        text = f"{what}: {os.strerror(self.errno)} (errno {self.errno})"
        super().__init__(text + (f"\n{detail}" if detail else ""))


class BpfLoadError(BpfError):
    """Loading failed; ``verifier_log`` holds the kernel verifier's output."""

    def __init__(self, what: str, err: int, verifier_log: str) -> None:
        self.verifier_log = verifier_log
        super().__init__(what, err, verifier_log)


class BpfAttachError(BpfError):
    """Attaching a loaded program to its hook failed."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionProblem(
            "udptrace needs root (BPF and tracefs): run it with sudo, or as root"
        )
