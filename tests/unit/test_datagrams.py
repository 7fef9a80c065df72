"""The shared UDP sockets to an upstream: few ports, random IDs, replies matched, ports renewed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import dns.message
import pytest

from aidns.resolver.endpoints import parse_upstream
from aidns.resolver.errors import UpstreamError
from aidns.resolver.upstream import datagrams
from aidns.resolver.upstream.pool import Upstream

from ..helpers import dnsmasq
from ..helpers.dnsserver import Behaviour, FakeNameserver


def query_wire(name: str, query_id: int = 0x1234) -> bytes:
    query = dns.message.make_query(name, "A")
    query.id = query_id
    return query.to_wire()


@pytest.fixture
def server() -> Iterator[FakeNameserver]:
    with FakeNameserver() as started:
        yield started


def test_queries_at_once_share_a_few_ports_each_with_its_own_id_and_answer(
    server: FakeNameserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datagrams, "MAX_IN_FLIGHT_PER_SOCKET", 30)
    wires = [query_wire(f"n{index}.test", query_id=7) for index in range(100)]

    async def all_at_once() -> list[bytes]:
        upstream = Upstream(parse_upstream(server.hostport))
        try:
            return await asyncio.gather(*(upstream.exchange(wire, 5) for wire in wires))
        finally:
            await upstream.aclose()

    responses = asyncio.run(all_at_once())
    for wire, response in zip(wires, responses, strict=True):
        message = dns.message.from_wire(response)
        assert message.id == 7
        assert message.question == dns.message.from_wire(wire).question
    ports = {received.peer[1] for received in server.received}
    assert len(ports) == 4  # 100 queries, at most 30 on a port
    ids = [received.wire[:2] for received in server.received]
    assert len(set(ids)) > 80  # random, not the client's 7


def test_a_port_is_retired_after_its_share_of_queries(
    server: FakeNameserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datagrams, "QUERIES_PER_SOCKET", 5)

    async def one_after_another() -> None:
        upstream = Upstream(parse_upstream(server.hostport))
        try:
            for index in range(14):
                await upstream.exchange(query_wire(f"n{index}.test"), 5)
            assert len(upstream.link.datagrams._ports) == 1  # the retired ones are closed
        finally:
            await upstream.aclose()

    asyncio.run(one_after_another())
    assert len({received.peer[1] for received in server.received}) == 3


def test_a_late_reply_is_ignored_and_the_next_query_gets_its_own(server: FakeNameserver) -> None:
    server.behaviours["slow.test"] = Behaviour.SILENT

    async def late_then_quick() -> bytes:
        upstream = Upstream(parse_upstream(server.hostport))
        try:
            with pytest.raises(UpstreamError, match="no answer"):
                await upstream.exchange(query_wire("slow.test"), 0.2)
            assert not any(port.waiting for port in upstream.link.datagrams._ports)
            return await upstream.exchange(query_wire("quick.test", query_id=5), 2)
        finally:
            await upstream.aclose()

    message = dns.message.from_wire(asyncio.run(late_then_quick()))
    assert message.id == 5
    assert str(message.question[0].name) == "quick.test."


def test_an_upstream_that_refuses_fails_at_once() -> None:
    port = dnsmasq.free_port()  # nothing listens there: the kernel answers with ICMP

    async def refused() -> None:
        upstream = Upstream(parse_upstream(f"127.0.0.1:{port}"))
        try:
            await upstream.exchange(query_wire("a.test"), 2)
        finally:
            await upstream.aclose()

    started = time.monotonic()
    with pytest.raises(UpstreamError, match=f"127.0.0.1:{port}"):
        asyncio.run(refused())
    assert time.monotonic() - started < 1.0
