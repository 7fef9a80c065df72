"""Linux: where a client's socket is filed in the kernel's socket tables, and /proc/net."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aidns.resolver.procinfo.common import SocketOwner, proc_net_address
from aidns.resolver.query import Transport

_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"


class SocketTable(Protocol):
    """Finds the client's socket; `deadline` is on the time.monotonic() clock."""

    def owner(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        deadline: float,
    ) -> SocketOwner | None: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """One family and pair of ends under which the client's socket may be filed."""

    family: int
    client_ip: bytes  # 4 or 16 bytes
    client_port: int
    server_ip: bytes
    server_port: int


def _packed(ip: str) -> tuple[int, bytes]:
    try:
        return socket.AF_INET, socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip.split("%", 1)[0])


def candidates(server: tuple[str, int], client: tuple[str, int]) -> list[Candidate]:
    """The (family, addresses) under which the client's socket may be filed, likeliest first.

    A client seen as ::ffff:a.b.c.d is usually an IPv4 socket, sometimes a dual-stack IPv6 one.
    A wildcard server address is replaced by the client's own: right for loopback, which is
    where aidns's clients are.
    """
    client_family, client_ip = _packed(client[0])
    server_family, server_ip = _packed(server[0])
    if server_family == socket.AF_INET6 and server_ip.startswith(_MAPPED_PREFIX):
        server_family, server_ip = socket.AF_INET, server_ip[12:]
    found = []
    if client_family == socket.AF_INET6 and client_ip.startswith(_MAPPED_PREFIX):
        v4 = client_ip[12:]
        v4_server = server_ip if server_family == socket.AF_INET and any(server_ip) else v4
        found.append(Candidate(socket.AF_INET, v4, client[1], v4_server, server[1]))
        v6_server = _MAPPED_PREFIX + v4_server
        found.append(Candidate(socket.AF_INET6, client_ip, client[1], v6_server, server[1]))
        return found
    if server_family != client_family or not any(server_ip):
        server_ip = client_ip
    found.append(Candidate(client_family, client_ip, client[1], server_ip, server[1]))
    return found


@dataclass(frozen=True, slots=True)
class SocketEntry:
    """One socket as the kernel lists it: local and remote ends, owner, inode."""

    local_ip: bytes
    local_port: int
    remote_ip: bytes
    remote_port: int
    uid: int
    inode: int
    cookie: int = 0


def pick(entries: Iterator[SocketEntry], want: Candidate) -> SocketOwner | None:
    """The client's own socket among `entries`: its local end is the client's address and
    port, its remote end the server or nothing (an unconnected UDP socket)."""
    fallback = None
    width = len(want.client_ip)
    for entry in entries:
        local_ip = entry.local_ip[:width]
        if entry.local_port != want.client_port or (local_ip != want.client_ip and any(local_ip)):
            continue
        if entry.remote_port == want.server_port:
            return SocketOwner(entry.uid, entry.inode, entry.cookie)
        if entry.remote_port == 0 and fallback is None:
            fallback = SocketOwner(entry.uid, entry.inode, entry.cookie)
    return fallback


class ProcNetSockets:
    """The client's socket from /proc/net/{udp,udp6,tcp,tcp6}: slower than netlink, and
    quadratic in the number of sockets, but always there."""

    def __init__(self, proc_root: Path = Path("/proc")):
        self._net = proc_root / "net"

    def owner(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        deadline: float,
    ) -> SocketOwner | None:
        for want in candidates(server, client):
            suffix = "6" if want.family == socket.AF_INET6 else ""
            found = pick(self._entries(f"{transport.value}{suffix}", want.client_port), want)
            if found is not None:
                return found
        return None

    def _entries(self, table: str, local_port: int) -> Iterator[SocketEntry]:
        port_hex = f":{local_port:04X} "
        try:
            with open(self._net / table, encoding="utf-8", errors="replace") as rows:
                next(rows, None)
                for row in rows:
                    if port_hex not in row:
                        continue
                    fields = row.split()
                    try:
                        local_ip, local_port_ = proc_net_address(fields[1])
                        remote_ip, remote_port = proc_net_address(fields[2])
                        uid, inode = int(fields[7]), int(fields[9])
                    except (IndexError, ValueError):
                        continue
                    yield SocketEntry(local_ip, local_port_, remote_ip, remote_port, uid, inode)
        except OSError:
            return
