"""Upstream servers: their specs, one exchange over UDP, TCP, TLS or HTTPS, and the pool."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import dns.asyncbackend
import dns.exception
import dns.inet
import dns.message
import dns.rdatatype
from dns._asyncbackend import StreamSocket  # where dnspython's own signatures take it from

from aidns.resolver import validate
from aidns.resolver.errors import ConfigError, UpstreamError

if TYPE_CHECKING:
    import httpx2

log = logging.getLogger(__name__)

MAX_MESSAGE = 65535
QR, TC = 0x80, 0x02  # bits of the third header byte
SERVFAIL, REFUSED = 2, 5
EWMA_WEIGHT = 0.3  # weight of the newest RTT sample
RETRY_AFTER_S = (2.0, 4.0, 8.0, 16.0, 32.0, 60.0)  # after 1, 2, ... failures in a row
FIND_AGAIN_AFTER_FAILURES = 3  # an upstream given by name is looked up again after these
STREAMS_KEPT = 4  # idle TCP or TLS connections kept open per upstream
STREAM_IDLE_S = 10.0  # not reused after this long idle: servers close them (RFC 7766 6.2.3)

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


class Scheme(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"
    HTTPS = "https"


DEFAULT_PORTS = {Scheme.UDP: 53, Scheme.TCP: 53, Scheme.TLS: 853, Scheme.HTTPS: 443}


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """Where and how to ask; `str()` gives the canonical text that `parse_upstream` reads back."""

    scheme: Scheme
    host: str  # IP literal, or host name for tls/https
    port: int
    server_name: str | None = None  # name the certificate must match; for https, the URL host
    path: str = "/dns-query"  # https only

    @property
    def tls_name(self) -> str:
        return self.server_name or self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = self.port == DEFAULT_PORTS[self.scheme]
        authority = host if default else f"{host}:{self.port}"
        if self.scheme is Scheme.UDP:
            return self.host if default else authority
        path = self.path if self.scheme is Scheme.HTTPS else ""
        name = f"#{self.server_name}" if self.server_name not in (None, self.host) else ""
        return f"{self.scheme}://{authority}{path}{name}"


def parse_upstream(text: str) -> UpstreamSpec:
    """`IP`, `IP:PORT`, `[v6]:PORT` (UDP, TCP on truncation), `udp://`, `tcp://`,
    `tls://HOST[:PORT][#name]` or `https://HOST[:PORT][/path][#name]`; ConfigError otherwise."""
    scheme_text, has_scheme, rest = text.strip().partition("://")
    if not has_scheme:
        scheme_text, rest = "udp", text.strip()
    try:
        scheme = Scheme(scheme_text.lower())
    except ValueError:
        raise _bad(text, f"unknown scheme {scheme_text!r}; use udp, tcp, tls or https") from None
    rest, has_name, name = rest.partition("#")
    rest, slash, path = rest.partition("/")
    secure = scheme in (Scheme.TLS, Scheme.HTTPS)
    if slash and scheme is not Scheme.HTTPS:
        raise _bad(text, "only https:// upstreams take a path")
    if has_name and not secure:
        raise _bad(text, "only tls:// and https:// upstreams take a #server-name")
    host_text, port = _split_host_port(text, rest, DEFAULT_PORTS[scheme])
    host = _host(text, host_text, allow_names=secure)
    server_name = (_host(text, name, allow_names=True) if has_name else host) if secure else None
    return UpstreamSpec(scheme, host, port, server_name, f"/{path}" if path else "/dns-query")


def _bad(text: str, why: str) -> ConfigError:
    return ConfigError(f"bad upstream {text!r}: {why}")


def _split_host_port(text: str, authority: str, default_port: int) -> tuple[str, int]:
    port_text: str | None = None
    if authority.startswith("["):
        host, closed, after = authority[1:].partition("]")
        if not closed or ":" not in host or (after and not after.startswith(":")):
            raise _bad(text, "brackets hold an IPv6 address: [IPv6] or [IPv6]:PORT")
        port_text = after[1:] if after else None
    elif authority.count(":") > 1:
        host = authority  # bare IPv6, default port
    else:
        host, colon, port_text = authority.partition(":")
        port_text = port_text if colon else None
    if port_text is None:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise _bad(text, f"port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def _host(text: str, host: str, allow_names: bool) -> str:
    if not host:
        raise _bad(text, "no host")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not allow_names:
        raise _bad(
            text,
            f"{host!r} is not an IP address; plain, udp:// and tcp:// upstreams need one, "
            "because aidns is the resolver and has nothing to look names up with",
        )
    name = host.lower().removesuffix(".")
    if len(name) > 253 or not _HOST_NAME.fullmatch(name) or name.replace(".", "").isdigit():
        raise _bad(text, f"{host!r} is neither an IP address nor a host name")
    return name


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


def _answers(response: bytes, wire_id: bytes, question: bytes) -> bool:
    """Whether a reply is to our query (see validate.py); ValueError when it is but cannot be
    used, which counts as the upstream's failure."""
    if validate.mismatch(response, wire_id, question) is not None:
        return False
    problem = validate.defect(response)
    if problem is not None:
        raise ValueError(f"unusable reply: {problem}")
    return True


AddressFinder = Callable[[str], Awaitable[str]]


async def system_address(host: str) -> str:
    """The operating system's lookup: loops when the system resolves through aidns itself."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


class StreamConnections:
    """Connections to one upstream over TCP or TLS, each reused for query after query.

    A connection carries one query at a time (RFC 7766 6.2.1); queries asked at once take
    further connections, and up to `kept` stay open between queries. A reused connection
    that the server has closed meanwhile costs one retry on a new one.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[StreamSocket]],
        kept: int = STREAMS_KEPT,
        idle_s: float = STREAM_IDLE_S,
    ) -> None:
        self._connect = connect
        self.kept = kept
        self.idle_s = idle_s
        self._idle: list[tuple[float, StreamSocket]] = []  # (last used, connection), newest last
        self.opened = 0

    async def exchange(self, ask: Callable[[StreamSocket], Awaitable[bytes]]) -> bytes:
        reused = await self._take_idle()
        if reused is not None:
            try:
                return await self._use(reused, ask)
            except TimeoutError:
                raise
            except (OSError, EOFError) as exc:
                log.debug("a kept connection failed (%s); asking on a new one", exc)
        self.opened += 1
        return await self._use(await self._connect(), ask)

    async def _take_idle(self) -> StreamSocket | None:
        while self._idle:
            used_at, connection = self._idle.pop()
            if time.monotonic() - used_at < self.idle_s:
                return connection
            await connection.close()
        return None

    async def _use(
        self, connection: StreamSocket, ask: Callable[[StreamSocket], Awaitable[bytes]]
    ) -> bytes:
        try:
            answer = await ask(connection)
        except BaseException:  # cancelled mid-answer too: what is left on it is unreadable
            await connection.close()
            raise
        if len(self._idle) < self.kept:
            self._idle.append((time.monotonic(), connection))
        else:
            await connection.close()
        return answer

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, connection in idle:
            await connection.close()


async def _read_exactly(connection: StreamSocket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await connection.recv(size - len(data), None)
        if not chunk:
            raise EOFError("the server closed the connection")
        data += chunk
    return data


class Upstream:
    """One upstream server with its health: EWMA of RTT, consecutive failures, last failure time."""

    def __init__(
        self,
        spec: UpstreamSpec,
        verify: bool | str = True,
        find_address: AddressFinder | None = None,
    ) -> None:
        self.spec = spec
        self.find_address = find_address or system_address
        self.rtt_s: float | None = None
        self.failures = 0
        self.last_failure_s: float | None = None  # time.monotonic()
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
        self._address = spec.host if is_ip(spec.host) else None
        self._looking_up = asyncio.Lock()
        self._client: httpx2.AsyncClient | None = None
        self._client_address: str | None = None
        self.streams = StreamConnections(self._connect)

    def __repr__(self) -> str:
        return f"Upstream({self.spec}, rtt_s={self.rtt_s}, failures={self.failures})"

    def record_success(self, rtt_s: float) -> None:
        self.failures = 0
        old = self.rtt_s
        self.rtt_s = rtt_s if old is None else old + EWMA_WEIGHT * (rtt_s - old)

    def record_failure(self, now_s: float) -> None:
        self.failures += 1
        self.last_failure_s = now_s
        if self.failures % FIND_AGAIN_AFTER_FAILURES == 0 and not is_ip(self.spec.host):
            self._address = None  # the name may point elsewhere now: look it up again

    def cooling_down(self, now_s: float) -> bool:
        """Failed lately: asked only after the healthy ones until the back-off has passed."""
        if not self.failures or self.last_failure_s is None:
            return False
        return now_s - self.last_failure_s < RETRY_AFTER_S[min(self.failures, 6) - 1]

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
        loop = asyncio.get_running_loop()
        wire_id, question = secrets.token_bytes(2), _question(query_wire)
        family = socket.AF_INET6 if ":" in self.spec.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect((self.spec.host, self.spec.port))  # the kernel drops other sources
            await loop.sock_sendall(sock, wire_id + query_wire[2:])
            while True:
                response = await loop.sock_recv(sock, MAX_MESSAGE)
                if _answers(response, wire_id, question):
                    break
                log.debug("%s: ignoring a reply that does not match the query", self.spec)
        if response[2] & TC:
            return await self._tcp(query_wire)
        return query_wire[:2] + response[2:]

    async def _tcp(self, query_wire: bytes) -> bytes:
        wire_id, question = secrets.token_bytes(2), _question(query_wire)
        framed = struct.pack("!H", len(query_wire)) + wire_id + query_wire[2:]

        async def ask(connection: StreamSocket) -> bytes:
            await connection.sendall(framed, None)
            (length,) = struct.unpack("!H", await _read_exactly(connection, 2))
            response = await _read_exactly(connection, length)
            if not _answers(response, wire_id, question):
                raise ValueError("the reply does not match the query")
            return response

        response = await self.streams.exchange(ask)
        return query_wire[:2] + response[2:]

    async def _tls(self, query_wire: bytes) -> bytes:
        import dns.asyncquery

        query = dns.message.from_wire(query_wire)
        address = await self._host_address()

        async def ask(connection: StreamSocket) -> bytes:
            response = await dns.asyncquery.tls(query, address, sock=connection)
            return response.to_wire()

        response = await self.streams.exchange(ask)
        return query_wire[:2] + response[2:]

    async def _connect(self) -> StreamSocket:
        """A new TCP connection, or TLS for a tls:// upstream (plain TCP serves UDP's retries)."""
        address = await self._host_address()
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

    async def _host_address(self) -> str:
        """The host's IP address; a host name is looked up once, by the bootstrap servers."""
        if self._address is None:
            async with self._looking_up:
                if self._address is None:
                    self._address = await self.find_address(self.spec.host)
        return self._address

    async def _doh_client(self) -> httpx2.AsyncClient:
        """One client per upstream, so connections (and HTTP/2 streams) are reused."""
        import httpx2

        address = await self._host_address()
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
        await self.streams.aclose()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _first_line(exc: Exception) -> str:
    return str(exc).split("\n", 1)[0] or type(exc).__name__


def is_ip(host: str) -> bool:
    """Whether `host` is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class UpstreamPool:
    """The configured upstreams, asked best first, all within one time budget per query.

    Upstreams given by name are found through `bootstrap` (servers given by IP), or the
    operating system when there are none.
    """

    def __init__(
        self,
        specs: Sequence[UpstreamSpec],
        timeout_s: float = 2.0,
        verify: bool | str = True,
        bootstrap: Sequence[UpstreamSpec] = (),
    ) -> None:
        if not specs:
            raise ConfigError("no upstream servers")
        self.bootstrap = UpstreamPool(bootstrap, timeout_s, verify) if bootstrap else None
        self.verify = verify
        self.upstreams = [self._upstream(spec) for spec in specs]
        self.timeout_s = timeout_s

    def _upstream(self, spec: UpstreamSpec) -> Upstream:
        return Upstream(spec, self.verify, self.bootstrap.find_address if self.bootstrap else None)

    @property
    def specs(self) -> tuple[UpstreamSpec, ...]:
        return tuple(upstream.spec for upstream in self.upstreams)

    async def replace(
        self, specs: Sequence[UpstreamSpec], bootstrap: Sequence[UpstreamSpec] = ()
    ) -> None:
        """Ask `specs` from now on; an upstream in both lists keeps its health and connections."""
        if not specs:
            raise ConfigError("no upstream servers")
        if bootstrap and self.bootstrap is not None:
            await self.bootstrap.replace(bootstrap)
        elif bootstrap:
            self.bootstrap = UpstreamPool(bootstrap, self.timeout_s, self.verify)
        current = {upstream.spec: upstream for upstream in self.upstreams}
        self.upstreams = [
            current.pop(spec) if spec in current else self._upstream(spec) for spec in specs
        ]
        for gone in current.values():
            await gone.aclose()

    async def find_address(self, host: str) -> str:
        """An IPv4 address of `host`, else an IPv6 one, as these upstreams answer."""
        problems = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            query = dns.message.make_query(host, rdtype)
            try:
                response, upstream = await self.resolve(query.to_wire())
            except UpstreamError as exc:
                problems.append(str(exc))
                continue
            for rrset in dns.message.from_wire(response).answer:
                if rrset.rdtype == rdtype:
                    return str(next(iter(rrset)).address)
            problems.append(f"{upstream.spec} has no {dns.rdatatype.to_text(rdtype)} record")
        raise UpstreamError(f"cannot find the address of {host}: {'; '.join(problems)}")

    def ranked(self, now_s: float) -> list[Upstream]:
        """Healthy before cooling down, then lowest RTT. An untried upstream counts as fastest,
        so each gets measured once; ties keep the configured order (the sort is stable)."""
        return sorted(self.upstreams, key=lambda u: (u.cooling_down(now_s), u.rtt_s or 0.0))

    async def resolve(self, query_wire: bytes) -> tuple[bytes, Upstream]:
        """Ask upstreams in turn until one answers other than SERVFAIL or REFUSED; each try
        gets an equal share of what is left of the budget. An all-SERVFAIL round returns
        the last SERVFAIL; UpstreamError when none answered."""
        deadline_s = time.monotonic() + self.timeout_s
        ranked = self.ranked(time.monotonic())
        servfail: tuple[bytes, Upstream] | None = None
        problems: list[str] = []
        for left, upstream in zip(range(len(ranked), 0, -1), ranked, strict=True):
            sent_s = time.monotonic()
            budget_s = (deadline_s - sent_s) / left
            if budget_s <= 0:
                break
            try:
                response = await upstream.exchange(query_wire, budget_s)
            except UpstreamError as exc:
                upstream.record_failure(time.monotonic())
                problems.append(str(exc))
                log.debug("%s", exc)
                continue
            rcode = response[3] & 0x0F
            if rcode not in (SERVFAIL, REFUSED):
                upstream.record_success(time.monotonic() - sent_s)
                return response, upstream
            upstream.record_failure(time.monotonic())
            problems.append(f"{upstream.spec}: {'SERVFAIL' if rcode == SERVFAIL else 'REFUSED'}")
            log.debug("%s", problems[-1])
            if rcode == SERVFAIL:
                servfail = response, upstream
        if servfail is not None:
            return servfail
        raise UpstreamError("; ".join(problems) or f"no time left in {self.timeout_s:g} s")

    async def aclose(self) -> None:
        for upstream in self.upstreams:
            await upstream.aclose()
        if self.bootstrap is not None:
            await self.bootstrap.aclose()
