"""Forwarding with a real loopback upstream: background refreshes of answers about to expire."""

from __future__ import annotations

import asyncio
import time

import dns.message

from aidns.resolver.config import CacheConfig
from aidns.resolver.endpoints import parse_upstream
from aidns.resolver.query import Query, Transport
from aidns.resolver.stages.caching import AnswerCache
from aidns.resolver.stages.forwarding import ForwardingStage
from aidns.resolver.upstream.pool import UpstreamPool

from ..helpers.dnsserver import Behaviour, FakeNameserver
from .helpers import make_wire


def udp_query(name: str) -> Query:
    return Query(make_wire(name), ("127.0.0.1", 40000), Transport.UDP, time.monotonic())


async def until(condition, timeout_s: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_name_in_use_is_refreshed_in_the_background_before_it_expires() -> None:
    async def scenario(server: FakeNameserver) -> None:
        cache = AnswerCache(CacheConfig())
        pool = UpstreamPool([parse_upstream(server.hostport)])
        forwarding = ForwardingStage(pool, cache)
        try:
            first = udp_query("busy.test")
            await forwarding.resolve(first)
            old = cache._entries[first.cache_key()]
            server.address = "192.0.2.99"  # what the refresh will bring
            # asked in the last tenth of the TTL: answered from the cache at once...
            response = cache.recall(udp_query("busy.test"), old.expires_at - 5)
            assert response is not None
            assert dns.message.from_wire(response).answer[0][0].address == "192.0.2.1"
            # ...and asked upstream again meanwhile, without a client waiting
            await until(lambda: cache._entries[first.cache_key()] is not old)
            assert server.queries_for("busy.test") == 2
            fresh = cache.recall(udp_query("busy.test"), time.monotonic())
            assert fresh is not None
            assert dns.message.from_wire(fresh).answer[0][0].address == "192.0.2.99"
        finally:
            await forwarding.aclose()
            await pool.aclose()

    with FakeNameserver(ttl_s=100) as server:
        asyncio.run(scenario(server))


def test_a_refresh_that_fails_leaves_the_answer_until_it_expires() -> None:
    async def scenario(server: FakeNameserver) -> None:
        cache = AnswerCache(CacheConfig())
        pool = UpstreamPool([parse_upstream(server.hostport)], timeout_s=0.5)
        forwarding = ForwardingStage(pool, cache)
        try:
            first = udp_query("flaky.test")
            await forwarding.resolve(first)
            old = cache._entries[first.cache_key()]
            server.behaviours["flaky.test"] = Behaviour.SERVFAIL
            assert cache.recall(udp_query("flaky.test"), old.expires_at - 5) is not None
            await until(lambda: server.queries_for("flaky.test") == 2)
            await asyncio.sleep(0.05)
            assert cache._entries[first.cache_key()] is old  # a SERVFAIL is never cached
            assert cache.recall(udp_query("flaky.test"), old.expires_at - 1) is not None
        finally:
            await forwarding.aclose()
            await pool.aclose()

    with FakeNameserver(ttl_s=100) as server:
        asyncio.run(scenario(server))
