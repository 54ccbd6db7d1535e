"""Private test networks: two network namespaces joined by a veth pair.

The demo and the tests send traffic only here: every address lives inside
namespaces this module created, and :meth:`VethPair.remove` deletes them
(and with them the veths) on every way out.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from udptrace.errors import UdptraceError

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_serial = itertools.count()


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise UdptraceError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class VethPair:
    """Namespace `a` (sender side) and `b` (receiver side), one veth between them."""

    name: str = ""
    addr_a: str = "10.213.0.1"
    addr_b: str = "10.213.0.2"
    addr6_a: str = "fd00:213::1"
    addr6_b: str = "fd00:213::2"
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"ut{os.getpid() % 100000}x{next(_serial)}"

    @property
    def ns_a(self) -> str:
        return f"{self.name}a"

    @property
    def ns_b(self) -> str:
        return f"{self.name}b"

    @property
    def if_a(self) -> str:
        return f"{self.name}a"[:15]

    @property
    def if_b(self) -> str:
        return f"{self.name}b"[:15]

    def create(self) -> VethPair:
        try:
            for ns in (self.ns_a, self.ns_b):
                _ip("netns", "add", ns)
                self.created.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self.ns_a, "link", "add", self.if_a, "type", "veth",
                "peer", "name", self.if_b, "netns", self.ns_b)
            for ns, ifname, v4, v6 in ((self.ns_a, self.if_a, self.addr_a, self.addr6_a),
                                       (self.ns_b, self.if_b, self.addr_b, self.addr6_b)):
                _ip("-n", ns, "addr", "add", f"{v4}/24", "dev", ifname)
                _ip("-n", ns, "addr", "add", f"{v6}/64", "dev", ifname, "nodad")
                _ip("-n", ns, "link", "set", ifname, "up")
                # multicast stays on this veth, never on the host's interfaces
                _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", ifname)
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self.created.clear()

    def __enter__(self) -> VethPair:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def command(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def run(self, ns: str, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(ns, argv), check=False, **kwargs)  # type: ignore[call-overload]

    def popen(self, ns: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen:
        return subprocess.Popen(self.command(ns, argv), **kwargs)  # type: ignore[call-overload]


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run this thread in network namespace `ns`; sockets made here stay in it."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(target)
        yield
    finally:
        _setns(home)
        os.close(home)
        os.close(target)
