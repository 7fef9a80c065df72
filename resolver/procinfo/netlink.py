"""Linux: a client's socket from the kernel's sock_diag netlink interface."""

from __future__ import annotations

import errno
import select
import socket
import struct
import time

from aidns.resolver.procinfo.common import SocketOwner
from aidns.resolver.procinfo.sockets import Candidate, SocketEntry, candidates, pick
from aidns.resolver.query import Transport

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
ALL_STATES = 0xFFFFFFFF
REMEMBERED_ENDS = 4096  # exact requests kept built, by transport and ends

_NLMSGHDR = struct.Struct("=IHHII")
_REQ_HEAD = struct.Struct("=BBBxI")  # family, protocol, extensions, states
_SOCKID_PORTS = struct.Struct("!HH")  # inet_diag_sockid: ports in network order ...
_SOCKID_TAIL = struct.Struct("=III")  # ... then interface and the 64-bit cookie
_MSG_UID_INODE = struct.Struct("=II")  # inet_diag_msg.idiag_uid, idiag_inode
_COOKIE = struct.Struct("=II")  # inet_diag_sockid.idiag_cookie, low word first
_COOKIE_AT = 44  # in inet_diag_msg
_CHECK = struct.Struct("=III")  # cookie (low, high) and inode, as `holds` compares them
_MSG_LEN = 72  # sizeof(struct inet_diag_msg)
_EXACT_LEN = _NLMSGHDR.size + _REQ_HEAD.size + _SOCKID_PORTS.size + 32 + _SOCKID_TAIL.size
_NLA = struct.Struct("=HH")
_BC_OP = struct.Struct("=BBH")
_NLMSG_ERRNO = struct.Struct("=i")


class NetlinkSockets:
    """sock_diag requests: an exact lookup of the 4-tuple, else a dump filtered by port.

    The kernel reads an exact request's addresses differently per protocol: a UDP lookup
    finds the socket a packet from "source" to "destination" would reach, so the server goes
    in "source"; a TCP lookup takes "source" as the socket's own end, so the client goes there.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        self._sock.setblocking(False)  # the kernel answers an exact request within send()
        self._poll = select.poll()
        self._poll.register(self._sock, select.POLLIN)
        self._seq = 0
        self._buffer = bytearray(8192)
        self._checks: dict[tuple[object, ...], list[bytes]] = {}
        self._exact_bodies: dict[tuple[object, ...], list[tuple[bytes, Candidate]]] = {}
        self.protocols = {
            transport
            for transport in Transport
            if self._handler_present(socket.AF_INET, _protocol(transport))
        }

    def close(self) -> None:
        self._sock.close()

    def _handler_present(self, family: int, protocol: int) -> bool:
        """udp_diag and tcp_diag are modules; a dump says ENOENT when one is missing."""
        try:
            _, error = self._request(self._dump_request(family, protocol, 0), 0.5, dump=True)
        except OSError:
            return False
        return error == 0

    def owner(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        deadline: float,
    ) -> SocketOwner | None:
        found = self.exact(transport, server, client, deadline)
        if found is not None:
            return found
        protocol = _protocol(transport)
        for want in candidates(server, client):
            if time.monotonic() > deadline:
                return None
            request = self._dump_request(want.family, protocol, want.client_port)
            entries, _ = self._request(request, deadline, dump=True)
            found = pick(iter(entries), want)
            if found is not None:
                return found
        return None

    def exact(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        deadline: float,
    ) -> SocketOwner | None:
        """The socket filed under exactly these ends, without a dump: about 5 µs."""
        exact = self._exact_bodies.get((transport, server, client))
        if exact is None:
            exact = self._exact_for(transport, server, client)
        sock = self._sock
        for body, want in exact:
            self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
            sock.send(_NLMSGHDR.pack(_EXACT_LEN, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0) + body)
            try:
                size = sock.recv_into(self._buffer)
            except BlockingIOError:  # never seen: the kernel answers within send()
                entries, _ = self._request(b"", deadline, sent=True)
                found = pick(iter(entries), want)
            else:
                found = self._exact_answer(size, seq, want)
            if found is not None:
                return found
        return None

    def holds(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        identity: tuple[int, int],
    ) -> bool:
        """True when the socket filed under these ends is still (inode, cookie) `identity`.

        For a socket of its own that serves one thread and only exact requests, so every
        answer is the one to the request just sent: no sequence numbers, no lock, no parsing
        beyond two comparisons. About 2 system calls and a few µs, for the repeat path.
        """
        checks = self._checks.get((transport, server, client))
        if checks is None:
            checks = self._checks_for(transport, server, client)
        sock = self._sock
        buffer = self._buffer
        wanted = _CHECK.pack(identity[1] & 0xFFFFFFFF, identity[1] >> 32, identity[0])
        for request in checks:
            sock.send(request)
            try:
                size = sock.recv_into(buffer)
            except BlockingIOError:
                return False
            if size < _NLMSGHDR.size + _MSG_LEN or buffer[4] != SOCK_DIAG_BY_FAMILY:
                continue  # an error: no socket filed so in this family
            at = _NLMSGHDR.size
            found = _CHECK.pack(
                *_COOKIE.unpack_from(buffer, at + _COOKIE_AT),
                _MSG_UID_INODE.unpack_from(buffer, at + 64)[1],
            )
            return found == wanted
        return False

    def _checks_for(
        self, transport: Transport, server: tuple[str, int], client: tuple[str, int]
    ) -> list[bytes]:
        bodies = self._exact_bodies.get((transport, server, client))
        if bodies is None:
            bodies = self._exact_for(transport, server, client)
        checks = [
            _NLMSGHDR.pack(_EXACT_LEN, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 0, 0) + body
            for body, _ in bodies
        ]
        if len(self._checks) >= REMEMBERED_ENDS:
            self._checks.clear()
        self._checks[(transport, server, client)] = checks
        return checks

    def _exact_answer(self, size: int, seq: int, want: Candidate) -> SocketOwner | None:
        """The socket in an exact request's answer, checked as `pick` would, without copies."""
        data = self._buffer
        if size < _NLMSGHDR.size + _MSG_LEN:
            return None
        _, kind, _, msg_seq, _ = _NLMSGHDR.unpack_from(data)
        if msg_seq != seq or kind != SOCK_DIAG_BY_FAMILY:
            return None  # an error (no such socket), or a late part of a dump we gave up on
        at = _NLMSGHDR.size
        local_port, remote_port = _SOCKID_PORTS.unpack_from(data, at + 4)
        width = len(want.client_ip)
        local_ip = data[at + 8 : at + 8 + width]
        if local_port != want.client_port or (local_ip != want.client_ip and any(local_ip)):
            return None
        if remote_port not in (want.server_port, 0):
            return None
        uid, inode = _MSG_UID_INODE.unpack_from(data, at + 64)
        low, high = _COOKIE.unpack_from(data, at + _COOKIE_AT)
        return SocketOwner(uid, inode, low | high << 32)

    def _exact_for(
        self, transport: Transport, server: tuple[str, int], client: tuple[str, int]
    ) -> list[tuple[bytes, Candidate]]:
        """The exact requests' bodies for these ends, built once for a client that asks again."""
        protocol = _protocol(transport)
        exact = []
        for want in candidates(server, client):
            if transport is Transport.UDP:
                ends = (want.server_ip, want.server_port, want.client_ip, want.client_port)
            else:
                ends = (want.client_ip, want.client_port, want.server_ip, want.server_port)
            exact.append((_exact_body(want.family, protocol, *ends), want))
        if len(self._exact_bodies) >= REMEMBERED_ENDS:
            self._exact_bodies.clear()
        self._exact_bodies[(transport, server, client)] = exact
        return exact

    def _header(self, length: int, flags: int) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return _NLMSGHDR.pack(_NLMSGHDR.size + length, SOCK_DIAG_BY_FAMILY, flags, self._seq, 0)

    def _dump_request(self, family: int, protocol: int, local_port: int) -> bytes:
        # bytecode: local port >= p, then <= p; a failed test jumps past the end (reject)
        bytecode = b"".join(
            (
                _BC_OP.pack(INET_DIAG_BC_S_GE, 8, 20),
                _BC_OP.pack(0, 0, local_port),
                _BC_OP.pack(INET_DIAG_BC_S_LE, 8, 12),
                _BC_OP.pack(0, 0, local_port),
            )
        )
        body = b"".join(
            (
                _REQ_HEAD.pack(family, protocol, 0, ALL_STATES),
                b"\0" * 48,
                _NLA.pack(_NLA.size + len(bytecode), INET_DIAG_REQ_BYTECODE),
                bytecode,
            )
        )
        return self._header(len(body), NLM_F_REQUEST | NLM_F_DUMP) + body

    def _request(
        self, payload: bytes, deadline: float, dump: bool = False, sent: bool = False
    ) -> tuple[list[SocketEntry], int]:
        """Send one request; its sockets and errno (0, or e.g. ENOENT when none matched)."""
        seq = self._seq
        sock = self._sock
        if not sent:
            sock.send(payload)
        entries: list[SocketEntry] = []
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:  # a dump's next part is made as we read
                wait_ms = max(deadline - time.monotonic(), 0.0002) * 1000
                if not self._poll.poll(wait_ms):
                    return entries, errno.ETIMEDOUT
                continue
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _, msg_seq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    break
                body = offset + _NLMSGHDR.size
                offset += (length + 3) & ~3
                if msg_seq != seq:
                    continue  # a late answer to a request we gave up on
                if kind == NLMSG_DONE:
                    return entries, 0
                if kind == NLMSG_ERROR:
                    return entries, -_NLMSG_ERRNO.unpack_from(data, body)[0]
                if kind == SOCK_DIAG_BY_FAMILY and length - _NLMSGHDR.size >= _MSG_LEN:
                    entries.append(_parse_diag_msg(data, body))
                    if not dump:
                        return entries, 0


def _exact_body(
    family: int, protocol: int, src: bytes, sport: int, dst: bytes, dport: int
) -> bytes:
    return b"".join(
        (
            _REQ_HEAD.pack(family, protocol, 0, ALL_STATES),
            _SOCKID_PORTS.pack(sport, dport),
            src.ljust(16, b"\0"),
            dst.ljust(16, b"\0"),
            _SOCKID_TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE),
        )
    )


def _parse_diag_msg(data: bytes, at: int) -> SocketEntry:
    sport, dport = _SOCKID_PORTS.unpack_from(data, at + 4)
    uid, inode = _MSG_UID_INODE.unpack_from(data, at + 64)
    low, high = _COOKIE.unpack_from(data, at + _COOKIE_AT)
    local_ip, remote_ip = data[at + 8 : at + 24], data[at + 24 : at + 40]
    return SocketEntry(local_ip, sport, remote_ip, dport, uid, inode, low | high << 32)


def _protocol(transport: Transport) -> int:
    return socket.IPPROTO_UDP if transport is Transport.UDP else socket.IPPROTO_TCP
