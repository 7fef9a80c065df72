"""aidns as the system's nameserver: the addresses the system should ask, and a probe of each."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.rcode

from aidns.resolver.endpoints import ListenAddress

PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Nameserver:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def resolved_text(self) -> str:
        """As systemd-resolved's DNS= reads it."""
        if self.port == 53:
            return self.host
        return str(self)


def aidns_nameservers(listen: Sequence[ListenAddress]) -> list[Nameserver]:
    """Where the system should send its queries: each listen address, a wildcard one as
    loopback."""
    found: list[Nameserver] = []
    for address in listen:
        host = ipaddress.ip_address(address.host)
        if host.is_unspecified:
            host = ipaddress.ip_address("::1" if host.version == 6 else "127.0.0.1")
        server = Nameserver(str(host), address.port)
        if server not in found:
            found.append(server)
    return found


def probe(server: Nameserver, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Ask `server` for the root's NS records: the rcode it answered with, or None. The
    socket is connected, so a closed port fails at once instead of timing out."""
    query = dns.message.make_query(".", "NS")
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    deadline = time.monotonic() + timeout_s
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((server.host, server.port))
            sock.send(query.to_wire())
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                response = dns.message.from_wire(sock.recv(65535))
                if response.id == query.id:
                    return dns.rcode.to_text(response.rcode())
    except (OSError, dns.exception.DNSException):
        return None
