"""``opc.udp://HOST:PORT/`` addresses (OPC UA Part 14, UDP transport) and their sockets."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PORT", "DEFAULT_URL", "UdpEndpoint", "interface_index", "parse_url"]

DEFAULT_PORT = 4840
# open62541's tutorial publisher and subscriber meet here.
DEFAULT_URL = "opc.udp://224.0.0.22:4840/"


@dataclass(frozen=True)
class UdpEndpoint:
    """A numeric address and port; IPv6 when family is AF_INET6."""

    host: str
    port: int
    family: socket.AddressFamily

    @property
    def is_multicast(self) -> bool:
        return ipaddress.ip_address(self.host).is_multicast

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if self.family == socket.AF_INET6 else self.host
        return f"opc.udp://{host}:{self.port}/"

    def sockaddr(self, ifindex: int = 0) -> tuple[str, int] | tuple[str, int, int, int]:
        """The address for bind/sendto; ifindex scopes IPv6 link-local addresses."""
        if self.family == socket.AF_INET6:
            return (self.host, self.port, 0, ifindex)
        return (self.host, self.port)

    def multicast_request(self, ifindex: int) -> bytes:
        """The membership request for joining this group on ifindex (0: routing decides)."""
        group = socket.inet_pton(self.family, self.host)
        if self.family == socket.AF_INET6:
            return group + struct.pack("@I", ifindex)
        # struct ip_mreqn: group, local address (any), interface index.
        return group + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)


def parse_url(url: str) -> UdpEndpoint:
    """Parse ``opc.udp://HOST[:PORT][/]``; a host name is resolved once, here."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    if parts.scheme != "opc.udp":
        raise ValueError(f"{url!r}: expected opc.udp://HOST:PORT/")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: nothing may follow HOST:PORT/")
    host = parts.hostname
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise ValueError(f"{url!r}: cannot resolve {host}: {exc.strerror}") from None
        family, _, _, _, sockaddr = info[0]
        return UdpEndpoint(str(sockaddr[0]), port, socket.AddressFamily(family))
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return UdpEndpoint(str(address), port, family)


def interface_index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise ValueError(f"no network interface {name!r} here") from None
