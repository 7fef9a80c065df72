"""Fake nameservers on loopback for tests: plain UDP and TCP, DNS over TLS, DNS over HTTPS."""

from __future__ import annotations

import contextlib
import http.server
import random
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

POLL_S = 0.05  # how often the serving threads look for stop()
IDLE_S = 10.0  # a connection with nothing to say for this long is closed
SPOOFED = "198.51.100.66"  # the address in the decoy replies that a client must ignore


class Behaviour(StrEnum):
    """What the server does with a query for a name."""

    ANSWER = "answer"  # A: the server's address; other types: no data
    TRUNCATE = "truncate"  # over UDP an empty reply with TC set; elsewhere the answer
    SERVFAIL = "servfail"
    REFUSED = "refused"
    SILENT = "silent"  # never replies
    WRONG_ID_FIRST = "wrong-id-first"  # over UDP a spoofed reply with another ID, then the answer
    WRONG_QUESTION_FIRST = "wrong-question-first"  # over UDP a spoofed reply for another name first
    CUT_OFF = "cut-off"  # the answer with its last record cut short (and no OPT)
    NO_QUESTION = "no-question"  # NXDOMAIN with the question section left out
    WRONG_ID = "wrong-id"  # only a reply with another ID
    WRONG_QUESTION = "wrong-question"  # only a reply for another name
    QR_CLEAR = "qr-clear"  # the answer with the QR bit clear


@dataclass(frozen=True, slots=True)
class Received:
    """One query as the server got it."""

    transport: str  # "udp", "tcp", "tls" or "https"
    wire: bytes
    qname: str  # lower case, no trailing dot
    peer: tuple[str, int]


class FakeNameserver:
    """Answers UDP and TCP on one loopback port, with behaviours per name, and keeps every query.

    with FakeNameserver() as server:               # or "::1"; port 0, read .port
        server.behaviours["big.test"] = Behaviour.TRUNCATE
        upstream = parse_upstream(server.hostport)  # "127.0.0.1:PORT"
        ...
        assert server.queries_for("big.test") == 2
    """

    stream_transport = "tcp"
    serves_udp = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        address: str = "192.0.2.1",
        ttl_s: int = 300,
        default: Behaviour = Behaviour.ANSWER,
        delay_s: float | tuple[float, float] = 0.0,  # a range: a random delay within it
        idle_s: float = IDLE_S,
    ) -> None:
        self.host = host
        self.port = 0
        self.address = address
        self.ttl_s = ttl_s
        self.default = default
        self.delay_s = delay_s
        self.idle_s = idle_s
        self.behaviours: dict[str, Behaviour] = {}
        self.received: list[Received] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listeners: list[socket.socket] = []
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def queries(self) -> int:
        return len(self.received)

    def queries_for(self, name: str) -> int:
        return sum(1 for r in self.received if r.qname == name.lower().rstrip("."))

    def start(self) -> Self:
        for _ in range(20):  # the UDP port may be taken when the TCP one is free
            try:
                tcp, udp = self._bind()
                break
            except OSError:
                self._close_listeners()
        else:
            raise OSError(f"no free port on {self.host} for both UDP and TCP")
        self._spawn(self._accept, tcp)
        if udp is not None:
            self._spawn(self._serve_udp, udp)
        return self

    def stop(self) -> None:
        """Stop serving and wait for every thread; open connections are shut down."""
        self._stopping.set()
        self._close_listeners()
        with self._lock:
            open_now, threads = list(self._open), list(self._threads)
        for conn in open_now:
            with contextlib.suppress(OSError):  # the raw socket's, so TLS state is left alone
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=2.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def replies(self, wire: bytes, transport: str, peer: tuple[str, int]) -> list[bytes]:
        """What to send back for one query: nothing, the answer, or a decoy then the answer."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return []
        question = query.question[0] if query.question else None
        qname = question.name.to_text(omit_final_dot=True).lower() if question is not None else ""
        with self._lock:
            self.received.append(Received(transport, wire, qname, peer))
        behaviour = self.behaviours.get(qname, self.default)
        if isinstance(self.delay_s, tuple):
            time.sleep(random.uniform(*self.delay_s))
        elif self.delay_s:
            time.sleep(self.delay_s)
        if behaviour is Behaviour.SILENT:
            return []
        response = dns.message.make_response(query)
        if behaviour in _BROKEN and question is not None:
            return [_broken(behaviour, query, response, question, self.address, self.ttl_s)]
        if behaviour is Behaviour.SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif behaviour is Behaviour.REFUSED:
            response.set_rcode(dns.rcode.REFUSED)
        elif behaviour is Behaviour.TRUNCATE and transport == "udp":
            response.flags |= dns.flags.TC
        elif question is not None and question.rdtype == dns.rdatatype.A:
            response.answer.append(
                dns.rrset.from_text(question.name, self.ttl_s, "IN", "A", self.address)
            )
        answer = response.to_wire()
        if transport != "udp" or question is None:
            return [answer]
        if behaviour is Behaviour.WRONG_ID_FIRST:
            decoy = _spoof(query, question.name)
            decoy.id = (query.id + 1) % 65536
            return [decoy.to_wire(), answer]
        if behaviour is Behaviour.WRONG_QUESTION_FIRST:
            return [_spoof(query, dns.name.from_text("decoy.test")).to_wire(), answer]
        return [answer]

    def _bind(self) -> tuple[socket.socket, socket.socket | None]:
        tcp = socket.socket(self.family, socket.SOCK_STREAM)
        self._listeners.append(tcp)
        tcp.bind((self.host, self.port if self.port and not self.serves_udp else 0))
        tcp.listen(64)
        tcp.settimeout(POLL_S)
        self.port = tcp.getsockname()[1]
        if not self.serves_udp:
            return tcp, None
        udp = socket.socket(self.family, socket.SOCK_DGRAM)
        self._listeners.append(udp)
        udp.bind((self.host, self.port))
        udp.settimeout(POLL_S)
        return tcp, udp

    def _close_listeners(self) -> None:
        for sock in self._listeners:
            sock.close()
        self._listeners.clear()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _serve_udp(self, sock: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                wire, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._answer_udp, sock, wire, peer)

    def _answer_udp(self, sock: socket.socket, wire: bytes, peer: tuple[str, int]) -> None:
        for reply in self.replies(wire, "udp", peer[:2]):
            try:
                sock.sendto(reply, peer)
            except OSError:
                return

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(self.idle_s)
            with self._lock:
                self.connections += 1
            self._spawn(self._connection, conn, peer[:2])

    def _connection(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        try:
            with self._tracked(conn):
                self.serve_connection(conn, peer)
        except (OSError, ValueError):
            pass  # the client went away, failed the TLS handshake, or stop() shut us down

    @contextlib.contextmanager
    def _tracked(self, conn: socket.socket) -> Iterator[socket.socket]:
        """Known to stop() while open; closed at the end."""
        with self._lock:
            self._open.add(conn)
        try:
            yield conn
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    @contextlib.contextmanager
    def _tls(self, conn: socket.socket, context: ssl.SSLContext) -> Iterator[socket.socket]:
        tls = context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        with self._tracked(tls):  # the same descriptor, now owned by tls
            tls.do_handshake()
            yield tls

    def serve_connection(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        """Length-prefixed DNS messages until the client closes."""
        while header := _recv_exactly(conn, 2):
            wire = _recv_exactly(conn, struct.unpack("!H", header)[0])
            for reply in self.replies(wire, self.stream_transport, peer):
                conn.sendall(struct.pack("!H", len(reply)) + reply)


class FakeTlsNameserver(FakeNameserver):
    """DNS over TLS (TCP only), with the same behaviours and record as FakeNameserver."""

    stream_transport = "tls"
    serves_udp = False

    def __init__(self, ssl_context: ssl.SSLContext, host: str = "127.0.0.1", **options: Any):
        super().__init__(host, **options)
        self.ssl_context = ssl_context

    def serve_connection(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        with self._tls(conn, self.ssl_context) as tls:
            super().serve_connection(tls, peer)


class FakeDohServer(FakeNameserver):
    """DNS over HTTPS: POST application/dns-message to `path` (HTTP/1.1, keep-alive)."""

    stream_transport = "https"
    serves_udp = False

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        host: str = "127.0.0.1",
        *,
        path: str = "/dns-query",
        **options: Any,
    ) -> None:
        super().__init__(host, **options)
        self.ssl_context = ssl_context
        self.path = path

    def serve_connection(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        with self._tls(conn, self.ssl_context) as tls:
            _DohHandler(tls, peer, self)


class _DohHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, conn: socket.socket, peer: tuple[str, int], owner: FakeDohServer) -> None:
        self.owner = owner
        super().__init__(conn, peer, None)  # type: ignore[arg-type]  # no socketserver here

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != self.owner.path:
            self.send_error(404)
            return
        if self.headers.get("content-type") != "application/dns-message":
            self.send_error(415)
            return
        replies = self.owner.replies(body, "https", self.client_address)
        if not replies:
            return  # silent: the client waits for its timeout
        self.send_response(200)
        self.send_header("content-type", "application/dns-message")
        self.send_header("content-length", str(len(replies[-1])))
        self.end_headers()
        self.wfile.write(replies[-1])

    def log_message(self, format: str, *args: Any) -> None:
        pass


_BROKEN = frozenset(
    (
        Behaviour.CUT_OFF,
        Behaviour.NO_QUESTION,
        Behaviour.WRONG_ID,
        Behaviour.WRONG_QUESTION,
        Behaviour.QR_CLEAR,
    )
)


def _broken(
    behaviour: Behaviour,
    query: dns.message.Message,
    response: dns.message.Message,
    question: dns.rrset.RRset,
    address: str,
    ttl_s: int,
) -> bytes:
    """The one reply of a misbehaving server, on every transport."""
    response.answer.append(dns.rrset.from_text(question.name, ttl_s, "IN", "A", address))
    if behaviour is Behaviour.CUT_OFF:
        response.use_edns(False)
        return response.to_wire()[:-2]
    if behaviour is Behaviour.NO_QUESTION:
        response.answer.clear()
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.question = []
    elif behaviour is Behaviour.WRONG_ID:
        response.id = (query.id + 1) % 65536
    elif behaviour is Behaviour.WRONG_QUESTION:
        response = _spoof(query, dns.name.from_text("decoy.test"))
    elif behaviour is Behaviour.QR_CLEAR:
        response.flags &= ~dns.flags.QR
    return response.to_wire()


def _spoof(query: dns.message.Message, name: dns.name.Name) -> dns.message.Message:
    """A reply a forwarder must not accept: it names the spoofer's address."""
    decoy = dns.message.make_response(query)
    decoy.question = [dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.A)]
    decoy.answer.append(dns.rrset.from_text(name, 300, "IN", "A", SPOOFED))
    return decoy


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    """size bytes, or b"" at a clean end of stream before the first."""
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            if data:
                raise ValueError("connection closed mid-message")
            return b""
        data += chunk
    return data
