"""Upstream specs, exchanges over real loopback sockets, and the pool's order and failover."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
import socket
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest

from aidns.resolver.endpoints import Scheme, parse_upstream
from aidns.resolver.errors import ConfigError, UpstreamError
from aidns.resolver.upstream.pool import Upstream, UpstreamPool

from ..helpers import dnsmasq
from ..helpers.certs import CertFiles, make_cert
from ..helpers.dnsserver import (
    SPOOFED,
    Behaviour,
    FakeDohServer,
    FakeNameserver,
    FakeTlsNameserver,
)

T = TypeVar("T")
ANSWER = "192.0.2.1"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one test coroutine; no test may hang."""
    return asyncio.run(asyncio.wait_for(coro, 15))


def query_wire(name: str = "a.test", rdtype: str = "A", query_id: int = 0x1234) -> bytes:
    query = dns.message.make_query(name, rdtype)
    query.id = query_id
    return query.to_wire()


def addresses(response: bytes) -> list[str]:
    return [rd.address for rrset in dns.message.from_wire(response).answer for rd in rrset]


async def ask(text: str, wire: bytes, timeout_s: float = 2.0, verify: bool | str = True) -> bytes:
    upstream = Upstream(parse_upstream(text), verify)
    try:
        return await upstream.exchange(wire, timeout_s)
    finally:
        await upstream.aclose()
        await asyncio.sleep(0.05)  # a DoT socket closes after the TLS goodbyes: not a leak


async def resolve_all(pool: UpstreamPool, *wires: bytes) -> list[tuple[bytes, Upstream]]:
    try:
        return [await pool.resolve(wire) for wire in wires]
    finally:
        await pool.aclose()


@pytest.fixture
def server() -> Iterator[FakeNameserver]:
    with FakeNameserver() as started:
        yield started


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    return make_cert(tmp_path_factory.mktemp("cert"))


def localhost_address() -> str | None:
    """Where "localhost" points, when /etc/hosts says so and is read first: only then is the
    lookup sure not to ask a nameserver off this machine."""
    try:
        hosts = Path("/etc/hosts").read_text().splitlines()
        nsswitch = Path("/etc/nsswitch.conf").read_text().splitlines()
    except OSError:
        return None
    sources = next((line.split()[1:] for line in nsswitch if line.startswith("hosts:")), [])
    if sources[:1] != ["files"] or not any("localhost" in line.split()[1:] for line in hosts):
        return None
    address = str(socket.getaddrinfo("localhost", 853, type=socket.SOCK_STREAM)[0][4][0])
    return address if ipaddress.ip_address(address).is_loopback else None


# parse_upstream


GOOD = [
    # text, (scheme, host, port, server_name, path), canonical text
    ("192.0.2.53", (Scheme.UDP, "192.0.2.53", 53, None), "192.0.2.53"),
    (" 192.0.2.53:5353 ", (Scheme.UDP, "192.0.2.53", 5353, None), "192.0.2.53:5353"),
    ("2001:db8::53", (Scheme.UDP, "2001:db8::53", 53, None), "2001:db8::53"),
    ("[2001:DB8:0::53]", (Scheme.UDP, "2001:db8::53", 53, None), "2001:db8::53"),
    ("[2001:db8::53]:5353", (Scheme.UDP, "2001:db8::53", 5353, None), "[2001:db8::53]:5353"),
    ("fe80::1%eth0", (Scheme.UDP, "fe80::1%eth0", 53, None), "fe80::1%eth0"),
    ("udp://192.0.2.53", (Scheme.UDP, "192.0.2.53", 53, None), "192.0.2.53"),
    ("UDP://[::1]:53", (Scheme.UDP, "::1", 53, None), "::1"),
    ("tcp://192.0.2.53", (Scheme.TCP, "192.0.2.53", 53, None), "tcp://192.0.2.53"),
    ("tcp://2001:db8::53", (Scheme.TCP, "2001:db8::53", 53, None), "tcp://[2001:db8::53]"),
    ("tcp://[::1]:5353", (Scheme.TCP, "::1", 5353, None), "tcp://[::1]:5353"),
    (
        "tls://9.9.9.9#dns.quad9.net",
        (Scheme.TLS, "9.9.9.9", 853, "dns.quad9.net"),
        "tls://9.9.9.9#dns.quad9.net",
    ),
    ("tls://9.9.9.9:853", (Scheme.TLS, "9.9.9.9", 853, "9.9.9.9"), "tls://9.9.9.9"),
    (
        "tls://Dns.Quad9.Net.",
        (Scheme.TLS, "dns.quad9.net", 853, "dns.quad9.net"),
        "tls://dns.quad9.net",
    ),
    (
        "tls://[2620:fe::fe]:8853#DNS.quad9.net",
        (Scheme.TLS, "2620:fe::fe", 8853, "dns.quad9.net"),
        "tls://[2620:fe::fe]:8853#dns.quad9.net",
    ),
    (
        "https://dns.quad9.net/dns-query",
        (Scheme.HTTPS, "dns.quad9.net", 443, "dns.quad9.net"),
        "https://dns.quad9.net/dns-query",
    ),
    (
        "https://dns.example:8443",
        (Scheme.HTTPS, "dns.example", 8443, "dns.example"),
        "https://dns.example:8443/dns-query",
    ),
    (
        "https://9.9.9.9:443/dns-query#dns.quad9.net",
        (Scheme.HTTPS, "9.9.9.9", 443, "dns.quad9.net"),
        "https://9.9.9.9/dns-query#dns.quad9.net",
    ),
    (
        "https://[2620:fe::fe]/dns-query",
        (Scheme.HTTPS, "2620:fe::fe", 443, "2620:fe::fe"),
        "https://[2620:fe::fe]/dns-query",
    ),
]


@pytest.mark.parametrize(("text", "fields", "canonical"), GOOD)
def test_parse_upstream(text: str, fields: tuple[Any, ...], canonical: str) -> None:
    spec = parse_upstream(text)
    assert (spec.scheme, spec.host, spec.port, spec.server_name) == fields
    assert str(spec) == canonical
    assert parse_upstream(str(spec)) == spec


def test_parse_upstream_keeps_a_doh_path() -> None:
    spec = parse_upstream("https://dns.example/resolve/abc123")
    assert spec.path == "/resolve/abc123"
    assert str(spec) == "https://dns.example/resolve/abc123"
    assert parse_upstream(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no host"),
        ("dns.example", "not an IP address"),
        ("udp://dns.example", "not an IP address"),
        ("tcp://dns.example:53", "not an IP address"),
        ("999.1.1.1", "not an IP address"),
        ("1.2.3.4:53:53", "not an IP address"),
        ("192.0.2.53:0", "port '0'"),
        ("192.0.2.53:65536", "port '65536'"),
        ("192.0.2.53:dns", "port 'dns'"),
        ("192.0.2.53:", "port ''"),
        ("[2001:db8::53", "brackets"),
        ("[192.0.2.53]:53", "brackets"),
        ("[::1]53", "brackets"),
        ("ftp://192.0.2.53", "unknown scheme 'ftp'"),
        ("192.0.2.53#dns.example", "#server-name"),
        ("tcp://192.0.2.53/dns-query", "path"),
        ("tls://", "no host"),
        ("tls://9.9.9.9#", "no host"),
        ("tls://999.1.1.1", "neither"),
        ("tls://-bad.example", "neither"),
        ("tls://bad..example", "neither"),
        ("https://dns example/dns-query", "neither"),
        ("https://dns.example:99999/dns-query", "port '99999'"),
    ],
)
def test_parse_upstream_rejects(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_upstream(text)
    assert repr(text) in str(raised.value)
    assert why in str(raised.value)


def test_bad_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CA bundle"):
        Upstream(parse_upstream("tls://127.0.0.1#dns.test"), verify=str(tmp_path / "missing.pem"))


# exchanges over UDP and TCP


def test_udp_keeps_the_client_id_and_answers(server: FakeNameserver) -> None:
    response = run(ask(server.hostport, query_wire(query_id=0xBEEF)))
    assert dns.message.from_wire(response).id == 0xBEEF
    assert addresses(response) == [ANSWER]
    assert [r.transport for r in server.received] == ["udp"]


def test_udp_uses_fresh_ids_and_source_ports(server: FakeNameserver) -> None:
    async def five() -> None:
        for _ in range(5):
            await ask(server.hostport, query_wire(query_id=0x1234))

    run(five())
    ids = {r.wire[:2] for r in server.received}
    assert ids != {b"\x12\x34"} and len(ids) > 1
    assert len({r.peer[1] for r in server.received}) > 1


def test_tcp(server: FakeNameserver) -> None:
    response = run(ask(f"tcp://{server.hostport}", query_wire(query_id=7)))
    assert dns.message.from_wire(response).id == 7
    assert addresses(response) == [ANSWER]
    assert [r.transport for r in server.received] == ["tcp"]


@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_ipv6_loopback(scheme: str) -> None:
    try:
        started = FakeNameserver("::1").start()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        response = run(ask(f"{scheme}://{started.hostport}", query_wire()))
    finally:
        started.stop()
    assert addresses(response) == [ANSWER]
    assert started.received[0].peer[0] == "::1"


def test_truncated_udp_reply_is_asked_again_over_tcp(server: FakeNameserver) -> None:
    server.behaviours["big.test"] = Behaviour.TRUNCATE
    response = run(ask(server.hostport, query_wire("big.test", query_id=99)))
    message = dns.message.from_wire(response)
    assert message.id == 99
    assert not message.flags & dns.flags.TC
    assert addresses(response) == [ANSWER]
    assert [r.transport for r in server.received] == ["udp", "tcp"]


@pytest.mark.parametrize("behaviour", [Behaviour.WRONG_ID_FIRST, Behaviour.WRONG_QUESTION_FIRST])
def test_udp_ignores_replies_to_other_queries(server: FakeNameserver, behaviour: Behaviour) -> None:
    server.behaviours["spoofed.test"] = behaviour
    response = run(ask(server.hostport, query_wire("spoofed.test")))
    assert addresses(response) == [ANSWER]
    assert SPOOFED not in addresses(response)
    assert str(dns.message.from_wire(response).question[0].name) == "spoofed.test."


@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_a_reply_with_a_cut_off_record_is_a_failure_at_once(
    server: FakeNameserver, scheme: str
) -> None:
    server.behaviours["cut.test"] = Behaviour.CUT_OFF
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="unusable reply: record 1 of 1 is cut off"):
        run(ask(f"{scheme}://{server.hostport}", query_wire("cut.test"), timeout_s=2.0))
    assert time.monotonic() - started < 1.0  # not a timeout


def test_question_case_does_not_matter(server: FakeNameserver) -> None:
    response = run(ask(server.hostport, query_wire("MiXeD.Test")))
    assert addresses(response) == [ANSWER]


@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_edns_passes_through_byte_for_byte(server: FakeNameserver, scheme: str) -> None:
    wire = edns_query_wire()
    response = run(ask(f"{scheme}://{server.hostport}", wire))
    assert server.received[-1].transport == scheme
    assert server.received[-1].wire[2:] == wire[2:]
    assert response[:2] == wire[:2]


def edns_query_wire(name: str = "edns.test") -> bytes:
    options = [
        dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"\x01\x02\x03"),
        dns.edns.ECSOption("192.0.2.0", 24),
    ]
    query = dns.message.make_query(
        name, "A", use_edns=0, want_dnssec=True, payload=1232, options=options
    )
    query.flags |= dns.flags.CD
    query.id = 0x4242
    return query.to_wire()


@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_timeout_raises_within_budget(scheme: str) -> None:
    with FakeNameserver(default=Behaviour.SILENT) as silent:
        started = time.monotonic()
        with pytest.raises(UpstreamError, match=r"no answer within 0\.5 s"):
            run(ask(f"{scheme}://{silent.hostport}", query_wire(), timeout_s=0.5))
        elapsed = time.monotonic() - started
    assert 0.45 < elapsed < 0.5 + 0.5
    assert silent.queries == 1


def test_refused_connection_is_an_upstream_error() -> None:
    port = dnsmasq.free_port()  # nothing listens there
    with pytest.raises(UpstreamError, match=f"tcp://127.0.0.1:{port}"):
        run(ask(f"tcp://127.0.0.1:{port}", query_wire(), timeout_s=1.0))


# the pool


def test_pool_fails_over_from_a_silent_upstream_within_budget() -> None:
    with FakeNameserver(default=Behaviour.SILENT) as silent, FakeNameserver() as good:
        pool = UpstreamPool([parse_upstream(silent.hostport), parse_upstream(good.hostport)])
        started = time.monotonic()
        [(response, upstream)] = run(resolve_all(pool, query_wire()))
        elapsed = time.monotonic() - started
    assert addresses(response) == [ANSWER]
    assert upstream.spec == parse_upstream(good.hostport)
    assert 0.9 < elapsed < 2.0  # half the budget went to the silent one
    assert (silent.queries, good.queries) == (1, 1)


def test_pool_prefers_the_healthy_upstream_after_a_failure() -> None:
    with FakeNameserver(default=Behaviour.SILENT) as silent, FakeNameserver() as good:
        pool = UpstreamPool([parse_upstream(silent.hostport), parse_upstream(good.hostport)])
        run(resolve_all(pool, query_wire()))
        started = time.monotonic()
        answers = run(resolve_all(pool, query_wire("b.test"), query_wire("c.test")))
        elapsed = time.monotonic() - started
    assert [upstream.spec.port for _, upstream in answers] == [good.port, good.port]
    assert elapsed < 0.5
    assert (silent.queries, good.queries) == (1, 3)
    failed = pool.upstreams[0]
    assert failed.failures == 1 and failed.cooling_down(time.monotonic())


def test_pool_tries_a_failed_upstream_again_after_its_back_off() -> None:
    pool = UpstreamPool([parse_upstream("127.0.0.1:5301"), parse_upstream("127.0.0.1:5302")])
    first, second = pool.upstreams
    first.record_success(0.010)
    second.record_success(0.020)
    now = time.monotonic()
    first.record_failure(now)
    assert pool.ranked(now + 1.0) == [second, first]
    assert pool.ranked(now + 2.5) == [first, second]
    first.record_failure(now)
    assert pool.ranked(now + 2.5) == [second, first]  # two in a row: 4 s
    first.record_success(0.010)
    assert pool.ranked(now) == [first, second]


def test_pool_prefers_the_faster_upstream() -> None:
    with FakeNameserver(delay_s=0.15) as slow, FakeNameserver() as fast:
        pool = UpstreamPool([parse_upstream(slow.hostport), parse_upstream(fast.hostport)])
        wires = [query_wire(f"q{i}.test") for i in range(5)]
        answers = run(resolve_all(pool, *wires))
    # the first configured goes first, the untried one next, then the faster one
    assert [upstream.spec.port for _, upstream in answers] == [slow.port] + [fast.port] * 4
    assert (slow.queries, fast.queries) == (1, 4)
    assert pool.upstreams[0].rtt_s is not None and pool.upstreams[1].rtt_s is not None
    assert pool.upstreams[1].rtt_s < pool.upstreams[0].rtt_s


@pytest.mark.parametrize("behaviour", [Behaviour.SERVFAIL, Behaviour.REFUSED])
def test_pool_fails_over_on_servfail_and_refused(behaviour: Behaviour) -> None:
    with FakeNameserver(default=behaviour) as failing, FakeNameserver() as good:
        pool = UpstreamPool([parse_upstream(failing.hostport), parse_upstream(good.hostport)])
        [(response, upstream)] = run(resolve_all(pool, query_wire()))
    assert addresses(response) == [ANSWER]
    assert upstream is pool.upstreams[1]
    assert pool.upstreams[0].failures == 1
    assert (failing.queries, good.queries) == (1, 1)


def test_pool_passes_on_servfail_when_no_upstream_does_better() -> None:
    with (
        FakeNameserver(default=Behaviour.SERVFAIL) as first,
        FakeNameserver(default=Behaviour.SILENT) as silent,
        FakeNameserver(default=Behaviour.SERVFAIL) as last,
    ):
        specs = [parse_upstream(s.hostport) for s in (first, silent, last)]
        pool = UpstreamPool(specs, timeout_s=1.0)
        [(response, upstream)] = run(resolve_all(pool, query_wire(query_id=5)))
    message = dns.message.from_wire(response)
    assert message.rcode() == dns.rcode.SERVFAIL and message.id == 5
    assert upstream is pool.upstreams[2]


def test_pool_raises_when_only_refusals_came() -> None:
    with FakeNameserver(default=Behaviour.REFUSED) as refusing:
        pool = UpstreamPool([parse_upstream(refusing.hostport)])
        with pytest.raises(UpstreamError, match="REFUSED"):
            run(resolve_all(pool, query_wire()))


def test_pool_raises_when_nothing_answers_within_budget() -> None:
    with (
        FakeNameserver(default=Behaviour.SILENT) as one,
        FakeNameserver(default=Behaviour.SILENT) as two,
    ):
        pool = UpstreamPool(
            [parse_upstream(one.hostport), parse_upstream(f"tcp://{two.hostport}")], 0.6
        )
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="no answer within") as raised:
            run(resolve_all(pool, query_wire()))
        elapsed = time.monotonic() - started
    assert elapsed < 0.6 + 0.5
    assert one.hostport in str(raised.value) and two.hostport in str(raised.value)
    assert (one.queries, two.queries) == (1, 1)


def test_pool_needs_an_upstream() -> None:
    with pytest.raises(ConfigError):
        UpstreamPool([])


# a real dnsmasq as upstream


@pytest.fixture(scope="module")
def dnsmasq_port() -> Iterator[int]:
    if not dnsmasq.available():
        pytest.skip("dnsmasq is not installed")
    with dnsmasq.run_dnsmasq("--address=/example.test/192.0.2.1") as port:
        yield port


@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_dnsmasq_answers(dnsmasq_port: int, scheme: str) -> None:
    response = run(ask(f"{scheme}://127.0.0.1:{dnsmasq_port}", query_wire("www.example.test")))
    assert addresses(response) == ["192.0.2.1"]
    assert dns.message.from_wire(response).id == 0x1234


def test_dnsmasq_keeps_edns_and_the_do_bit(dnsmasq_port: int) -> None:
    response = dns.message.from_wire(
        run(ask(f"127.0.0.1:{dnsmasq_port}", edns_query_wire("www.example.test")))
    )
    assert response.edns == 0 and response.ednsflags & dns.flags.DO


def test_pool_fails_over_when_dnsmasq_refuses(dnsmasq_port: int, server: FakeNameserver) -> None:
    """dnsmasq has no servers to forward other.test to, so it answers REFUSED."""
    pool = UpstreamPool(
        [parse_upstream(f"127.0.0.1:{dnsmasq_port}"), parse_upstream(server.hostport)]
    )
    [(response, upstream)] = run(resolve_all(pool, query_wire("other.test")))
    assert addresses(response) == [ANSWER]
    assert upstream is pool.upstreams[1]
    assert pool.upstreams[0].failures == 1


# TCP and TLS connections, kept and reused


def stream_upstream(server: FakeNameserver, cert: CertFiles | None) -> Upstream:
    if cert is None:
        return Upstream(parse_upstream(f"tcp://{server.hostport}"))
    return Upstream(parse_upstream(f"tls://{server.hostport}#dns.test"), str(cert.cert))


@contextlib.contextmanager
def stream_server(kind: str, cert: CertFiles, **options: Any) -> Iterator[FakeNameserver]:
    server = FakeTlsNameserver(cert.server_context(), **options) if kind == "tls" else None
    with server or FakeNameserver(**options) as started:
        yield started


STREAM_KINDS = ["tcp", "tls"]


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_one_connection_serves_query_after_query(cert: CertFiles, kind: str) -> None:
    async def five(upstream: Upstream) -> list[bytes]:
        try:
            return [
                await upstream.exchange(query_wire(f"q{i}.test", query_id=i), 2) for i in range(5)
            ]
        finally:
            await upstream.aclose()

    with stream_server(kind, cert) as server:
        upstream = stream_upstream(server, cert if kind == "tls" else None)
        responses = run(five(upstream))
    assert [dns.message.from_wire(r).id for r in responses] == list(range(5))
    assert [dns.message.from_wire(r).question[0].name.to_text() for r in responses] == [
        f"q{i}.test." for i in range(5)
    ]
    assert (server.queries, server.connections, upstream.streams.opened) == (5, 1, 1)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_queries_at_once_take_more_connections_and_some_are_kept(
    cert: CertFiles, kind: str
) -> None:
    async def six_at_once_then_three(upstream: Upstream) -> None:
        try:
            wires = [query_wire(f"c{i}.test") for i in range(6)]
            await asyncio.gather(*(upstream.exchange(wire, 5) for wire in wires))
            for i in range(3):
                await upstream.exchange(query_wire(f"s{i}.test"), 5)
        finally:
            await upstream.aclose()

    with stream_server(kind, cert, delay_s=0.2) as server:
        upstream = stream_upstream(server, cert if kind == "tls" else None)
        run(six_at_once_then_three(upstream))
    assert server.queries == 9
    assert server.connections == 6  # the three later ones found kept connections
    assert upstream.streams.kept == 4


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_a_connection_the_server_closed_is_replaced_without_a_failure(
    cert: CertFiles, kind: str
) -> None:
    async def two_apart(upstream: Upstream) -> list[bytes]:
        try:
            first = await upstream.exchange(query_wire("one.test"), 2)
            await asyncio.sleep(0.5)  # the server has closed the idle connection by now
            return [first, await upstream.exchange(query_wire("two.test"), 2)]
        finally:
            await upstream.aclose()

    with stream_server(kind, cert, idle_s=0.2) as server:
        upstream = stream_upstream(server, cert if kind == "tls" else None)
        responses = run(two_apart(upstream))
    assert [addresses(r) for r in responses] == [[ANSWER], [ANSWER]]
    assert (server.queries, server.connections) == (2, 2)


def test_a_connection_idle_too_long_is_not_tried(server: FakeNameserver) -> None:
    async def two_apart(upstream: Upstream) -> None:
        try:
            await upstream.exchange(query_wire("one.test"), 2)
            await asyncio.sleep(0.3)
            await upstream.exchange(query_wire("two.test"), 2)
        finally:
            await upstream.aclose()

    upstream = stream_upstream(server, None)
    upstream.streams.idle_s = 0.1
    run(two_apart(upstream))
    assert (server.queries, server.connections, upstream.streams.opened) == (2, 2, 2)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_a_late_reply_never_answers_the_next_query(cert: CertFiles, kind: str) -> None:
    async def slow_then_quick(upstream: Upstream, server: FakeNameserver) -> bytes:
        try:
            with pytest.raises(UpstreamError, match="no answer within"):
                await upstream.exchange(query_wire("slow.test"), 0.2)
            server.delay_s = 0.0
            await asyncio.sleep(0.4)  # the slow reply has been sent by now
            return await upstream.exchange(query_wire("quick.test", query_id=5), 2)
        finally:
            await upstream.aclose()

    with stream_server(kind, cert, delay_s=0.4) as server:
        upstream = stream_upstream(server, cert if kind == "tls" else None)
        response = run(slow_then_quick(upstream, server))
    message = dns.message.from_wire(response)
    assert (message.id, message.question[0].name.to_text()) == (5, "quick.test.")
    assert server.connections == 2


# DNS over TLS and over HTTPS


@pytest.fixture
def dot(cert: CertFiles) -> Iterator[FakeTlsNameserver]:
    with FakeTlsNameserver(cert.server_context()) as started:
        yield started


@pytest.fixture
def doh(cert: CertFiles) -> Iterator[FakeDohServer]:
    with FakeDohServer(cert.server_context()) as started:
        yield started


@pytest.mark.parametrize("suffix", ["#dns.test", ""])  # by name, by the IP in the certificate
def test_dot(dot: FakeTlsNameserver, cert: CertFiles, suffix: str) -> None:
    response = run(
        ask(f"tls://{dot.hostport}{suffix}", query_wire(query_id=77), verify=str(cert.cert))
    )
    assert dns.message.from_wire(response).id == 77
    assert addresses(response) == [ANSWER]
    assert [r.transport for r in dot.received] == ["tls"]


@pytest.mark.parametrize("scheme", ["tls", "https"])
def test_host_name_is_looked_up(cert: CertFiles, scheme: str) -> None:
    address = localhost_address()
    if address is None:
        pytest.skip("localhost is not in /etc/hosts, or /etc/hosts is not read first")
    server_class = FakeTlsNameserver if scheme == "tls" else FakeDohServer
    with server_class(cert.server_context(), address) as started:
        text = f"{scheme}://localhost:{started.port}"
        response = run(ask(text, query_wire(), verify=str(cert.cert)))
    assert addresses(response) == [ANSWER]
    assert started.queries == 1


@pytest.mark.parametrize("scheme", ["tls", "https"])
def test_a_named_upstream_is_found_through_the_bootstrap_servers(
    cert: CertFiles, scheme: str
) -> None:
    server_class = FakeTlsNameserver if scheme == "tls" else FakeDohServer
    with (
        FakeNameserver(address="127.0.0.1") as bootstrap,
        server_class(cert.server_context()) as started,
    ):
        path = "/dns-query" if scheme == "https" else ""
        pool = UpstreamPool(
            [parse_upstream(f"{scheme}://upstream.test:{started.port}{path}#dns.test")],
            verify=str(cert.cert),
            bootstrap=[parse_upstream(bootstrap.hostport)],
        )
        answers = run(resolve_all(pool, query_wire("one.test"), query_wire("two.test")))
    assert [addresses(response) for response, _ in answers] == [[ANSWER], [ANSWER]]
    assert started.queries == 2
    assert [r.qname for r in bootstrap.received] == ["upstream.test"]  # once, then remembered


def test_an_upstream_the_bootstrap_cannot_find_is_a_clear_failure(server: FakeNameserver) -> None:
    server.behaviours["upstream.test"] = Behaviour.SERVFAIL
    pool = UpstreamPool(
        [parse_upstream("tls://upstream.test#dns.test")],
        timeout_s=1,
        bootstrap=[parse_upstream(server.hostport)],
    )
    with pytest.raises(UpstreamError, match=r"cannot find the address of upstream\.test"):
        run(resolve_all(pool, query_wire()))


@pytest.mark.parametrize(
    ("suffix", "trusted"),
    [("#wrong.test", True), ("#dns.test", False)],
    ids=["wrong-name", "untrusted"],
)
def test_dot_checks_the_certificate(
    dot: FakeTlsNameserver, cert: CertFiles, suffix: str, trusted: bool
) -> None:
    verify: bool | str = str(cert.cert) if trusted else True
    with pytest.raises(UpstreamError, match="certificate verify failed"):
        run(ask(f"tls://{dot.hostport}{suffix}", query_wire(), verify=verify))
    assert dot.queries == 0


@pytest.mark.parametrize("suffix", ["#dns.test", ""])
def test_doh(doh: FakeDohServer, cert: CertFiles, suffix: str) -> None:
    text = f"https://{doh.hostport}/dns-query{suffix}"
    response = run(ask(text, query_wire(query_id=88), verify=str(cert.cert)))
    assert dns.message.from_wire(response).id == 88
    assert addresses(response) == [ANSWER]
    assert [r.transport for r in doh.received] == ["https"]
    assert doh.received[0].wire[:2] == b"\0\0"  # RFC 8484: ID 0 on the wire


def test_doh_reuses_its_connection(doh: FakeDohServer, cert: CertFiles) -> None:
    pool = UpstreamPool(
        [parse_upstream(f"https://{doh.hostport}/dns-query#dns.test")], verify=str(cert.cert)
    )
    answers = run(resolve_all(pool, *(query_wire(f"q{i}.test") for i in range(3))))
    assert [addresses(response) for response, _ in answers] == [[ANSWER]] * 3
    assert (doh.queries, doh.connections) == (3, 1)


@pytest.mark.parametrize(
    ("path_and_name", "error"),
    [
        ("/dns-query#wrong.test", "certificate verify failed"),
        ("/other#dns.test", "404"),
    ],
)
def test_doh_errors(doh: FakeDohServer, cert: CertFiles, path_and_name: str, error: str) -> None:
    with pytest.raises(UpstreamError, match=error):
        run(ask(f"https://{doh.hostport}{path_and_name}", query_wire(), verify=str(cert.cert)))
    assert doh.queries == 0


def test_doh_timeout(cert: CertFiles) -> None:
    with FakeDohServer(cert.server_context(), default=Behaviour.SILENT) as silent:
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="no answer within"):
            text = f"https://{silent.hostport}/dns-query#dns.test"
            run(ask(text, query_wire(), timeout_s=0.5, verify=str(cert.cert)))
    assert time.monotonic() - started < 0.5 + 0.5


@pytest.mark.parametrize("scheme", ["tls", "https"])
def test_edns_survives_tls_and_https(
    dot: FakeTlsNameserver, doh: FakeDohServer, cert: CertFiles, scheme: str
) -> None:
    text = (
        f"tls://{dot.hostport}#dns.test" if scheme == "tls" else f"https://{doh.hostport}#dns.test"
    )
    wire = edns_query_wire()
    run(ask(text, wire, verify=str(cert.cert)))
    [received] = (dot if scheme == "tls" else doh).received
    sent, got = dns.message.from_wire(wire), dns.message.from_wire(received.wire)
    assert (got.ednsflags, got.payload, got.options) == (sent.ednsflags, sent.payload, sent.options)
    assert got.flags == sent.flags


def test_replacing_the_upstreams_keeps_those_that_stay() -> None:
    async def scenario(first: FakeNameserver, second: FakeNameserver) -> None:
        pool = UpstreamPool([parse_upstream(first.hostport)])
        try:
            await pool.resolve(query_wire("before.test"))
            (kept,) = pool.upstreams
            await pool.replace([parse_upstream(second.hostport), parse_upstream(first.hostport)])
            assert pool.upstreams[1] is kept and kept.rtt_s is not None  # its health stays
            await pool.replace([parse_upstream(second.hostport)])
            response, upstream = await pool.resolve(query_wire("after.test"))
            assert upstream.spec == parse_upstream(second.hostport)
            assert addresses(response) == ["192.0.2.2"]
            with pytest.raises(ConfigError):
                await pool.replace([])
        finally:
            await pool.aclose()

    with FakeNameserver() as first, FakeNameserver(address="192.0.2.2") as second:
        run(scenario(first, second))
    assert first.queries_for("after.test") == 0


@pytest.mark.parametrize("scheme", ["tls", "https"])
def test_a_named_upstream_that_keeps_failing_is_looked_up_again(
    cert: CertFiles, scheme: str
) -> None:
    server_class = FakeTlsNameserver if scheme == "tls" else FakeDohServer
    with (
        FakeNameserver(address="127.0.0.2") as bootstrap,  # where nothing listens: it moved
        server_class(cert.server_context()) as started,
    ):
        path = "/dns-query" if scheme == "https" else ""
        pool = UpstreamPool(
            [parse_upstream(f"{scheme}://upstream.test:{started.port}{path}#dns.test")],
            timeout_s=1,
            verify=str(cert.cert),
            bootstrap=[parse_upstream(bootstrap.hostport)],
        )

        async def scenario() -> list[str]:
            outcomes = []
            try:
                for attempt in range(4):
                    if attempt == 3:
                        bootstrap.address = "127.0.0.1"  # the name now points at the server
                    try:
                        response, _ = await pool.resolve(query_wire(f"q{attempt}.test"))
                        outcomes.append(addresses(response)[0])
                    except UpstreamError:
                        outcomes.append("failed")
                    if attempt < 2:
                        assert bootstrap.queries_for("upstream.test") == 1
            finally:
                await pool.aclose()
            return outcomes

        outcomes = run(scenario())
    assert outcomes == ["failed", "failed", "failed", ANSWER]
    assert bootstrap.queries_for("upstream.test") == 2
