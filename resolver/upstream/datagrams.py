"""A few long-lived UDP sockets to one upstream, each on its own random port, shared by queries.

Each upstream query still gets a random ID, and its reply is matched by the socket it came in
on (connected: the kernel drops other sources), that ID and the question, as unbound's
outgoing port pool does (RFC 5452 9.2). A socket carries at most MAX_IN_FLIGHT_PER_SOCKET
queries at once and QUERIES_PER_SOCKET in its life, then it is retired and a new one, on a new
random port, takes its place. Everything here belongs to the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import NamedTuple

from aidns.resolver import validate

log = logging.getLogger(__name__)

MAX_SOCKETS = 8  # per upstream
MAX_IN_FLIGHT_PER_SOCKET = 128
QUERIES_PER_SOCKET = 2048  # then the port changes
ID_TRIES = 8  # random IDs tried before the query takes a socket of its own
RANDOM_BYTES = 4096  # read from the OS at once: 2,048 IDs per system call
MAX_MESSAGE = 65535


class _Waiting(NamedTuple):
    reply: asyncio.Future[bytes]
    question: bytes


class _Port:
    """One connected socket and the queries waiting on it, by wire ID."""

    __slots__ = ("asked", "sock", "waiting")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.waiting: dict[bytes, _Waiting] = {}
        self.asked = 0


class DatagramPorts:
    """The shared sockets to one upstream; `ask` sends one query and awaits its reply.

    `ask` returns None when no socket has room (the caller then uses a socket of its own);
    it raises OSError when the upstream refused (ICMP) and ValueError for a reply to our
    query that cannot be used. The caller bounds the wait.
    """

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._ports: list[_Port] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next = 0
        self._random = b""
        self._random_at = 0

    async def ask(self, wire: bytes, question: bytes) -> bytes | None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self.close()  # a new loop (only in tests): the old one's readers are gone
            self._loop = loop
        port = self._room()
        if port is None:
            return None
        for _ in range(ID_TRIES):
            wire_id = self._random_id()
            if wire_id not in port.waiting:
                break
        else:
            return None
        reply: asyncio.Future[bytes] = loop.create_future()
        port.waiting[wire_id] = _Waiting(reply, question)
        port.asked += 1
        try:
            port.sock.send(wire_id + wire[2:])
            return await reply
        finally:
            port.waiting.pop(wire_id, None)
            if port.asked >= QUERIES_PER_SOCKET and not port.waiting:
                self._retire(port)

    def _random_id(self) -> bytes:
        """Two bytes from os.urandom, as secrets.token_bytes gives them, read in bulk."""
        at = self._random_at
        if at >= len(self._random):
            self._random, at = os.urandom(RANDOM_BYTES), 0
        self._random_at = at + 2
        return self._random[at : at + 2]

    def _room(self) -> _Port | None:
        """A socket for one more query: the next in turn with room, or a new one."""
        ports = self._ports
        count = len(ports)
        for step in range(count):
            port = ports[(self._next + step) % count]
            if len(port.waiting) < MAX_IN_FLIGHT_PER_SOCKET and port.asked < QUERIES_PER_SOCKET:
                self._next = (self._next + step + 1) % count
                return port
        if count >= MAX_SOCKETS:
            return None
        return self._open()

    def _open(self) -> _Port | None:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(self.address)  # port 0 bound here: the kernel picks it at random
        except OSError as exc:
            sock.close()
            log.debug("cannot open a UDP socket to %s: %s", self.address, exc)
            return None
        port = _Port(sock)
        assert self._loop is not None
        self._loop.add_reader(sock.fileno(), self._read, port)
        self._ports.append(port)
        return port

    def _read(self, port: _Port) -> None:
        """Every datagram waiting on the socket: a matching reply ends its query's wait."""
        receive, waiting = port.sock.recv, port.waiting
        while True:
            try:
                data = receive(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError as exc:  # an ICMP error: the upstream refuses every query on it
                for refused in list(waiting.values()):
                    if not refused.reply.done():
                        refused.reply.set_exception(OSError(exc.errno, exc.strerror))
                return
            entry = waiting.get(data[:2])
            if entry is None or entry.reply.done():
                log.debug("%s: ignoring a reply to no query of ours", self.address)
                continue
            if validate.mismatch(data, data[:2], entry.question) is not None:
                log.debug("%s: ignoring a reply that does not match the query", self.address)
                continue
            problem = validate.defect(data)
            if problem is not None:
                entry.reply.set_exception(ValueError(f"unusable reply: {problem}"))
            else:
                entry.reply.set_result(data)

    def _retire(self, port: _Port) -> None:
        if port in self._ports:
            self._ports.remove(port)
        self._drop(port)

    def _drop(self, port: _Port) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(port.sock.fileno())
        port.sock.close()

    def close(self) -> None:
        """Closes every socket; queries still waiting get an error."""
        ports, self._ports = self._ports, []
        for port in ports:
            for entry in port.waiting.values():
                if not entry.reply.done():
                    with contextlib.suppress(RuntimeError):  # its loop is closed already
                        entry.reply.set_exception(OSError("the upstream's sockets were closed"))
            self._drop(port)
