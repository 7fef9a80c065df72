"""One exchange with one upstream over UDP, TCP, TLS or HTTPS: the query out, its reply back."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import ssl
import struct
from typing import TYPE_CHECKING

import dns.exception

from aidns.resolver import validate
from aidns.resolver.endpoints import Scheme, UpstreamSpec
from aidns.resolver.errors import ConfigError, UpstreamError
from aidns.resolver.upstream.bootstrap import AddressFinder, HostAddress
from aidns.resolver.upstream.datagrams import DatagramPorts
from aidns.resolver.upstream.streams import StreamConnections, read_exactly

if TYPE_CHECKING:  # dnspython's messages and sockets are imported when a stream needs them
    import httpx2
    from dns._asyncbackend import StreamSocket  # where dnspython's own signatures take it from

log = logging.getLogger(__name__)

MAX_MESSAGE = 65535
QR, TC = 0x80, 0x02  # bits of the third header byte


def _question(wire: bytes) -> bytes:
    """The first question (name in lower case, type, class) as wire bytes; b"" when none."""
    if len(wire) < 12:
        raise ValueError("shorter than a DNS header")
    if wire[4:6] == b"\0\0":
        return b""
    end = 12
    while end < len(wire) and wire[end] != 0:
        if wire[end] & 0xC0:
            raise ValueError("compressed name in the question")
        end += 1 + wire[end]
    if end + 5 > len(wire):
        raise ValueError("question cut short")
    return wire[12:end].lower() + wire[end : end + 5]


def _is_reply_to(response: bytes, wire_id: bytes, question: bytes) -> bool:
    """Whether a reply is to our query (see validate.py); ValueError when it is but cannot be
    used, which counts as the upstream's failure."""
    if validate.mismatch(response, wire_id, question) is not None:
        return False
    problem = validate.defect(response)
    if problem is not None:
        raise ValueError(f"unusable reply: {problem}")
    return True


class UpstreamLink:
    """How to reach one upstream: its address, TLS context, kept connections and DoH client.

    `exchange` asks it one query; health and choosing between upstreams are the pool's.
    """

    def __init__(
        self,
        spec: UpstreamSpec,
        verify: bool | str = True,
        find_address: AddressFinder | None = None,
    ) -> None:
        self.spec = spec
        self._ssl: ssl.SSLContext | None = None
        if spec.scheme in (Scheme.TLS, Scheme.HTTPS):
            # Imported here, and before the first query: it brings an HTTP stack, a sixth of
            # a second of start-up that plain upstreams (and every other command) need not pay.
            import dns.asyncquery
            import dns.query

            alpn = ["dot"] if spec.scheme is Scheme.TLS else None  # httpx sets h2/http1.1 itself
            try:
                self._ssl = dns.query.make_ssl_context(verify, verify is not False, alpn)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"upstream {spec}: cannot use CA bundle {verify!r}: {exc}"
                ) from None
        self.address = HostAddress(spec.host, find_address)
        self._client: httpx2.AsyncClient | None = None
        self._client_address: str | None = None
        self.streams = StreamConnections(self._connect)
        self.datagrams = DatagramPorts(spec.host, spec.port)

    async def exchange(self, query_wire: bytes, timeout_s: float) -> bytes:
        """Ask this upstream; the reply carries query_wire's ID. UpstreamError on timeout,
        connection error or a malformed reply."""
        try:
            async with asyncio.timeout(timeout_s):
                match self.spec.scheme:
                    case Scheme.UDP:
                        return await self._udp(query_wire)
                    case Scheme.TCP:
                        return await self._tcp(query_wire)
                    case Scheme.TLS:
                        return await self._tls(query_wire)
                    case Scheme.HTTPS:
                        return await self._https(query_wire)
        except TimeoutError:
            raise UpstreamError(f"{self.spec}: no answer within {timeout_s:.3g} s") from None
        except (OSError, EOFError, ValueError, dns.exception.DNSException) as exc:
            raise UpstreamError(f"{self.spec}: {_first_line(exc)}") from None

    async def _udp(self, query_wire: bytes) -> bytes:
        question = _question(query_wire)
        response = await self.datagrams.ask(query_wire, question)
        if response is None:  # every shared socket is full: one of its own
            response = await self._udp_alone(query_wire, question)
        if response[2] & TC:
            return await self._tcp(query_wire)
        return query_wire[:2] + response[2:]

    async def _udp_alone(self, query_wire: bytes, question: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        wire_id = secrets.token_bytes(2)
        family = socket.AF_INET6 if ":" in self.spec.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect((self.spec.host, self.spec.port))  # the kernel drops other sources
            await loop.sock_sendall(sock, wire_id + query_wire[2:])
            while True:
                response = await loop.sock_recv(sock, MAX_MESSAGE)
                if _is_reply_to(response, wire_id, question):
                    break
                log.debug("%s: ignoring a reply that does not match the query", self.spec)
        return response

    async def _tcp(self, query_wire: bytes) -> bytes:
        wire_id, question = secrets.token_bytes(2), _question(query_wire)
        framed = struct.pack("!H", len(query_wire)) + wire_id + query_wire[2:]

        async def ask(connection: StreamSocket) -> bytes:
            await connection.sendall(framed, None)
            (length,) = struct.unpack("!H", await read_exactly(connection, 2))
            response = await read_exactly(connection, length)
            if not _is_reply_to(response, wire_id, question):
                raise ValueError("the reply does not match the query")
            return response

        response = await self.streams.exchange(ask)
        return query_wire[:2] + response[2:]

    async def _tls(self, query_wire: bytes) -> bytes:
        import dns.asyncquery
        import dns.message

        query = dns.message.from_wire(query_wire)
        address = await self.address.get()

        async def ask(connection: StreamSocket) -> bytes:
            response = await dns.asyncquery.tls(query, address, sock=connection)
            return response.to_wire()

        response = await self.streams.exchange(ask)
        return query_wire[:2] + response[2:]

    async def _connect(self) -> StreamSocket:
        """A new TCP connection, or TLS for a tls:// upstream (plain TCP serves UDP's retries)."""
        import dns.asyncbackend
        import dns.inet

        address = await self.address.get()
        tls = self.spec.scheme is Scheme.TLS
        backend = dns.asyncbackend.get_backend("asyncio")
        connection: StreamSocket = await backend.make_socket(
            dns.inet.af_for_address(address),
            socket.SOCK_STREAM,
            destination=(address, self.spec.port),
            ssl_context=self._ssl if tls else None,
            server_hostname=self.spec.tls_name if tls else None,
        )
        return connection

    async def _https(self, query_wire: bytes) -> bytes:
        import dns.asyncquery
        import dns.message
        import httpx2

        query = dns.message.from_wire(query_wire)
        query.id = 0  # RFC 8484 4.1: friendlier to HTTP caches
        name = self.spec.tls_name
        url = f"https://{f'[{name}]' if ':' in name else name}:{self.spec.port}{self.spec.path}"
        client = await self._doh_client()
        try:
            response = await dns.asyncquery.https(query, url, client=client)
        except httpx2.HTTPError as exc:
            raise UpstreamError(f"{self.spec}: {_first_line(exc)}") from None
        return query_wire[:2] + response.to_wire()[2:]

    async def _doh_client(self) -> httpx2.AsyncClient:
        """One client per upstream, so connections (and HTTP/2 streams) are reused."""
        import dns.asyncbackend
        import httpx2

        address = await self.address.get()
        if self._client is not None and self._client_address != address:
            client, self._client = self._client, None
            await client.aclose()
        if self._client is None:
            self._client_address = address
            # dnspython's transport connects to `address` but verifies the URL's host name.
            backend = dns.asyncbackend.get_backend("asyncio")
            transport_class = backend.get_transport_class()
            transport = transport_class(
                http1=True, http2=True, verify=self._ssl, bootstrap_address=address
            )
            self._client = httpx2.AsyncClient(transport=transport, trust_env=False, timeout=None)
        return self._client

    async def aclose(self) -> None:
        self.datagrams.close()
        await self.streams.aclose()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _first_line(exc: Exception) -> str:
    return str(exc).split("\n", 1)[0] or type(exc).__name__
