"""UDP and TCP listeners: framing, truncation, and bytes to Query and back.

UDP is read by one plain thread per socket, which answers blocked and cached names itself
and hands the rest to the event loop; TCP is served by asyncio streams, within the bounds
of tcpclients.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from aidns.resolver.config import TcpConfig
from aidns.resolver.endpoints import ListenAddress
from aidns.resolver.errors import ConfigError
from aidns.resolver.pipeline import Pipeline
from aidns.resolver.query import PLAIN_UDP_SIZE, MalformedQuery, Query, Rcode, Transport
from aidns.resolver.replies import fit_udp, refusal, reply
from aidns.resolver.tcpclients import TcpClient, TcpClients, open_files_limit, open_streams

log = logging.getLogger(__name__)

UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
MAX_UDP_PACKET = 65535
_UDP = Transport.UDP  # a module global: an enum member read off its class costs 0.1 us
TCP_READ_AHEAD = 16 * 1024  # a TCP client's unread queries held: at most twice this
MAX_HANDED = 2048  # queries waiting for the loop; beyond it dropped, as a full socket buffer does
LOOP_BEHIND = "queries dropped: the event loop is behind"


class DnsServer:
    """Binds every listen address for UDP and TCP and serves them until stopped."""

    def __init__(
        self,
        pipeline: Pipeline,
        listen: Sequence[ListenAddress],
        tcp: TcpConfig | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.listen = tuple(listen)
        self.tcp = tcp or TcpConfig()
        self.tcp_clients = TcpClients(self.tcp, self._serve_tcp, open_files=None)
        self.bound: list[tuple[Transport, ListenAddress]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp_sockets: list[socket.socket] = []
        self._udp_threads: list[threading.Thread] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        # UDP threads append queries for the loop; the loop is woken only when no wake-up is
        # pending (deque appends and pops are thread-safe; the flag is cleared before draining)
        self._handed: collections.deque[tuple[Query, Any]] = collections.deque()
        self._wake_pending = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.tcp_clients = TcpClients(
            self.tcp, self._serve_tcp, open_files_limit(), noticed=self.pipeline.activity.note
        )
        for address in self.listen:
            udp, tcp = _bind_pair(address)
            port = udp.getsockname()[1]
            self._udp_sockets.append(udp)
            self.tcp_clients.listen(tcp)
            for transport in (Transport.UDP, Transport.TCP):
                bound = ListenAddress(address.host, port)
                self.bound.append((transport, bound))
                log.info("listening on %s %s", transport, bound)
        for sock in self._udp_sockets:
            thread = threading.Thread(
                target=self._serve_udp, args=(sock,), name=f"udp {sock.getsockname()[:2]}"
            )
            thread.daemon = True
            thread.start()
            self._udp_threads.append(thread)

    def healthy(self) -> bool:
        """Every UDP listener still reading; TCP is served by the event loop itself."""
        return all(thread.is_alive() for thread in self._udp_threads)

    async def stop(self) -> None:
        self._stopping = True
        for sock in self._udp_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.tcp_clients.stop_accepting()
        for thread in self._udp_threads:
            await asyncio.to_thread(thread.join, 2.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.tcp_clients.aclose()
        for sock in self._udp_sockets:
            sock.close()

    def _log_unexpected(self, what: str) -> None:
        """Counts an unexpected error by kind (see faults.py); call from an except block."""
        exc = sys.exc_info()[1]
        if exc is not None:
            self.pipeline.faults.unexpected(what, exc)

    def _serve_udp(self, sock: socket.socket) -> None:
        receive = sock.recvfrom
        send = sock.sendto
        answer_now = self.pipeline.answer_now
        replay = self.pipeline.replay
        clock = time.monotonic
        local = sock.getsockname()[:2]
        loop = self._loop
        assert loop is not None
        while not self._stopping:
            try:
                data, client = receive(MAX_UDP_PACKET)
            except OSError:
                if self._stopping:
                    return
                continue
            if not data:
                continue
            now = clock()
            try:
                response = replay(data, client, now, local)
            except Exception:
                self._log_unexpected("answering a repeated question")
                response = None
            if response is not None:
                if len(response) > PLAIN_UDP_SIZE:
                    response = fit_udp(Query(data, client, Transport.UDP, now, local), response)
                try:
                    send(response, client)
                except OSError as exc:
                    log.debug("could not answer %s: %s", client, exc)
                continue
            try:
                query = Query(data, client, _UDP, now, local)
            except MalformedQuery as exc:
                response = refusal(data, exc)
                if response is not None:
                    _send_quietly(send, response, client)
                continue
            except Exception:
                self._log_unexpected("reading a UDP packet")
                continue
            try:
                response = answer_now(query)
            except Exception:
                self._log_unexpected("answering a query")
                response = reply(query, Rcode.SERVFAIL)
            if response is None:
                if len(self._handed) >= MAX_HANDED:
                    self.pipeline.faults.note(
                        LOOP_BEHIND,
                        "%d queries wait for the event loop, the most allowed; "
                        "further ones that need an upstream are dropped until it catches up",
                        MAX_HANDED,
                    )
                    continue
                self._handed.append((query, send))
                if not self._wake_pending:
                    self._wake_pending = True
                    loop.call_soon_threadsafe(self._forward_handed)
            else:
                _send_quietly(send, fit_udp(query, response), client)

    def _forward_handed(self) -> None:
        self._wake_pending = False
        handed = self._handed
        while handed:
            self._forward_udp(*handed.popleft())

    def _forward_udp(self, query: Query, send: Any) -> None:
        task = asyncio.ensure_future(self.pipeline.answer_later(query))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._udp_done(done, query, send))

    def _udp_done(self, task: asyncio.Task[bytes], query: Query, send: Any) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        _send_quietly(send, fit_udp(query, task.result()), query.client)

    async def _serve_tcp(self, tcp_client: TcpClient) -> None:
        idle_timeout_s = self.tcp.idle_timeout_s
        max_queued, max_in_progress = self.tcp.max_queued_bytes, self.tcp.max_in_progress
        pending = tcp_client.pending
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await open_streams(tcp_client, TCP_READ_AHEAD)
            transport = writer.transport
            transport.set_write_buffer_limits(high=max_queued)
            client = writer.get_extra_info("peername")
            local = tuple(writer.get_extra_info("sockname")[:2])
            while not self._stopping:
                try:
                    over = (
                        len(pending) >= max_in_progress
                        or transport.get_write_buffer_size() > max_queued
                    )
                    if over and not await self._wait_for_room(writer, pending):
                        self.tcp_clients.stalled_client(tcp_client)
                        break
                    tcp_client.waiting = True
                    prefix = await asyncio.wait_for(reader.readexactly(2), idle_timeout_s)
                    tcp_client.waiting = False
                    self.tcp_clients.touch(tcp_client)
                    data = await asyncio.wait_for(
                        reader.readexactly(int.from_bytes(prefix, "big")), idle_timeout_s
                    )
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    break
                response = self._answer_tcp(data, client, local, pending, writer)
                if response is not None:
                    _write_framed(writer, response)
            tcp_client.waiting = False
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        except Exception:
            self._log_unexpected("serving a TCP connection")
        finally:
            self.tcp_clients.forget(tcp_client)
            if writer is not None and not writer.transport.get_write_buffer_size():
                writer.close()
            else:  # answers left unread would hold the descriptor, out of the limit's sight
                tcp_client.close_now()

    async def _wait_for_room(self, writer: asyncio.StreamWriter, pending: set[Any]) -> bool:
        """Waits, reading nothing, while the client's unsent answers are over the bound or
        too many of its queries are in progress; False when that outlasts the idle timeout."""
        try:
            async with asyncio.timeout(self.tcp.idle_timeout_s):
                while len(pending) >= self.tcp.max_in_progress:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                await writer.drain()
        except TimeoutError:
            return False
        return True

    def _answer_tcp(
        self,
        data: bytes,
        client: Any,
        local: tuple[Any, ...],
        pending: set[asyncio.Task[Any]],
        writer: asyncio.StreamWriter,
    ) -> bytes | None:
        try:
            query = Query(data, client, Transport.TCP, time.monotonic(), local)
        except MalformedQuery as exc:
            return refusal(data, exc)
        try:
            response = self.pipeline.answer_now(query)
        except Exception:
            self._log_unexpected("answering a query")
            return reply(query, Rcode.SERVFAIL)
        if response is not None:
            return response

        async def forward() -> None:
            _write_framed(writer, await self.pipeline.answer_later(query))

        task = asyncio.ensure_future(forward())
        for tracked in (pending, self._tasks):
            tracked.add(task)
            task.add_done_callback(tracked.discard)
        return None


def _write_framed(writer: asyncio.StreamWriter, response: bytes) -> None:
    if not writer.is_closing():
        writer.write(len(response).to_bytes(2, "big") + response)


def _send_quietly(send: Any, response: bytes, client: Any) -> None:
    try:
        send(response, client)
    except OSError as exc:
        log.debug("could not answer %s: %s", client, exc)


def _bind_pair(address: ListenAddress) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same port (port 0 picks one free for both)."""
    for _attempt in range(20):
        udp = _socket(address, socket.SOCK_DGRAM)
        try:
            udp.bind((address.host, address.port))
        except OSError as exc:
            udp.close()
            raise ConfigError(f"cannot listen on udp {address}: {exc.strerror}") from None
        port = udp.getsockname()[1]
        tcp = _socket(address, socket.SOCK_STREAM)
        try:
            tcp.bind((address.host, port))
            tcp.listen(128)
        except OSError as exc:
            tcp.close()
            udp.close()
            if address.port == 0:
                continue
            raise ConfigError(f"cannot listen on tcp {address}: {exc.strerror}") from None
        tcp.setblocking(False)
        return udp, tcp
    raise ConfigError(f"cannot find a port free for both UDP and TCP on {address.host}")


def _socket(address: ListenAddress, kind: socket.SocketKind) -> socket.socket:
    sock = socket.socket(address.family, kind)
    if address.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    else:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
    return sock
