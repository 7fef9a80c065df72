"""Forwarding with a real loopback upstream: refreshes of answers about to expire, identical
queries sharing one exchange, and the limit on exchanges in flight."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import dns.message
import pytest

from aidns.resolver.config import CacheConfig
from aidns.resolver.endpoints import parse_upstream
from aidns.resolver.query import Action, Decision, Query, Rcode, Transport
from aidns.resolver.stages.caching import AnswerCache
from aidns.resolver.stages.forwarding import NO_UPSTREAM, OVER_LIMIT, ForwardingStage
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


def query_with(name: str, query_id: int, *, edns: bool = False) -> Query:
    message = dns.message.make_query(name, "A", use_edns=0 if edns else None)
    message.id = query_id
    return Query(message.to_wire(), ("127.0.0.1", 40000), Transport.UDP, time.monotonic())


def forwarding_to(
    server: FakeNameserver, timeout_s: float = 2.0, **options: Any
) -> ForwardingStage:
    pool = UpstreamPool([parse_upstream(server.hostport)], timeout_s=timeout_s)
    return ForwardingStage(pool, AnswerCache(CacheConfig()), **options)


@pytest.mark.parametrize(
    ("behaviour", "ttl_s", "rcode"),
    [(Behaviour.REFUSED, 300, Rcode.SERVFAIL), (Behaviour.ANSWER, 0, Rcode.NOERROR)],
)
def test_identical_queries_share_one_exchange_and_get_their_own_id_and_name_case(
    behaviour: Behaviour, ttl_s: int, rcode: Rcode
) -> None:
    names = ["share.test", "Share.Test", "SHARE.TEST"]
    queries = [query_with(names[i % 3], 1000 + i) for i in range(60)]

    async def scenario(server: FakeNameserver) -> None:
        forwarding = forwarding_to(server)
        try:
            await asyncio.gather(*(forwarding.resolve(query) for query in queries))
        finally:
            await forwarding.pool.aclose()
        assert forwarding.shared == len(queries) - 1 and forwarding.in_flight == 0

    with FakeNameserver(default=behaviour, ttl_s=ttl_s, delay_s=0.1) as server:
        asyncio.run(scenario(server))
        assert server.queries == 1
    for query in queries:
        assert query.response is not None
        response = dns.message.from_wire(query.response)
        assert response.id == query.id and response.rcode() == rcode
        assert query.response[12 : query.question_end] == query.raw[12 : query.question_end]
        assert query.decision is not None
        if rcode == Rcode.NOERROR:
            assert query.decision.action is Action.FORWARDED and query.upstream == server.hostport
        else:
            assert query.decision.action is Action.ERROR


def test_a_silent_upstream_answers_everyone_waiting_with_servfail_within_the_budget() -> None:
    queries = [query_with("quiet.test", i) for i in range(50)]

    async def scenario(server: FakeNameserver) -> float:
        forwarding = forwarding_to(server, timeout_s=0.3)
        started = time.monotonic()
        try:
            await asyncio.gather(*(forwarding.resolve(query) for query in queries))
        finally:
            await forwarding.pool.aclose()
        assert forwarding.faults[NO_UPSTREAM] == 1  # one exchange failed, not fifty
        return time.monotonic() - started

    with FakeNameserver(default=Behaviour.SILENT) as server:
        elapsed = asyncio.run(scenario(server))
        assert server.queries == 1
    assert elapsed < 0.3 + 0.2
    assert all(q.response is not None and q.response[3] & 0x0F == Rcode.SERVFAIL for q in queries)


def test_queries_that_differ_beyond_id_and_case_are_asked_apart() -> None:
    async def scenario(server: FakeNameserver) -> None:
        forwarding = forwarding_to(server)
        try:
            await asyncio.gather(
                forwarding.resolve(query_with("apart.test", 1)),
                forwarding.resolve(query_with("apart.test", 2, edns=True)),
            )
        finally:
            await forwarding.pool.aclose()

    with FakeNameserver(ttl_s=0, delay_s=0.1) as server:
        asyncio.run(scenario(server))
        assert server.queries == 2


def test_beyond_the_in_flight_limit_a_question_is_answered_at_once_and_counted() -> None:
    queries = [query_with(f"n{i}.test", i) for i in range(5)]

    async def scenario(server: FakeNameserver) -> ForwardingStage:
        forwarding = forwarding_to(server, timeout_s=0.5, max_in_flight=2)
        tasks = [asyncio.ensure_future(forwarding.resolve(query)) for query in queries]
        await asyncio.sleep(0.1)
        done = [task.done() for task in tasks]
        await asyncio.gather(*tasks)
        await forwarding.pool.aclose()
        assert done == [False, False, True, True, True]
        return forwarding

    with FakeNameserver(default=Behaviour.SILENT) as server:
        forwarding = asyncio.run(scenario(server))
        assert server.queries == 2
    assert forwarding.faults[OVER_LIMIT] == 3
    for query in queries[2:]:
        assert query.response is not None and query.response[3] & 0x0F == Rcode.SERVFAIL
        assert query.decision == Decision(Action.ERROR, rule="too many upstream queries in flight")


def test_a_cancelled_exchange_still_answers_those_waiting_on_it() -> None:
    leader, follower = query_with("gone.test", 1), query_with("gone.test", 2)

    async def scenario(server: FakeNameserver) -> None:
        forwarding = forwarding_to(server)
        first = asyncio.ensure_future(forwarding.resolve(leader))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(forwarding.resolve(follower))
        await asyncio.sleep(0.05)
        first.cancel()
        await asyncio.wait_for(second, 1.0)
        await forwarding.pool.aclose()
        assert forwarding.in_flight == 0

    with FakeNameserver(default=Behaviour.SILENT) as server:
        asyncio.run(scenario(server))
    assert follower.response is not None and follower.response[:2] == follower.raw[:2]
    assert follower.response[3] & 0x0F == Rcode.SERVFAIL


def test_upstream_queries_in_flight_leave_descriptors_for_tcp_clients() -> None:
    from aidns.resolver.stages.forwarding import (
        MAX_UPSTREAM_QUERIES_IN_FLIGHT,
        upstream_query_limit,
    )

    assert upstream_query_limit(None, 100) == MAX_UPSTREAM_QUERIES_IN_FLIGHT
    assert upstream_query_limit(65536, 100) == MAX_UPSTREAM_QUERIES_IN_FLIGHT
    assert upstream_query_limit(1024, 100) == 1024 - 100 - 64
    assert upstream_query_limit(200, 100) == 36
    assert upstream_query_limit(150, 100) == 16


def test_a_watched_name_whose_upstream_fails_stays_watched_with_its_list() -> None:
    watched = Decision(Action.WATCHED, "api.openai.com", "cloud-ai")
    asked = [query_with("api.openai.com", 1), query_with("plain.test", 2)]
    asked[0].decision = watched

    async def scenario(server: FakeNameserver) -> None:
        forwarding = forwarding_to(server, timeout_s=0.2)
        try:
            for query in asked:
                await forwarding.resolve(query)
        finally:
            await forwarding.pool.aclose()

    with FakeNameserver(default=Behaviour.SILENT) as server:
        asyncio.run(scenario(server))
    assert asked[0].decision == watched
    assert asked[0].response is not None and asked[0].response[3] & 0x0F == Rcode.SERVFAIL
    assert asked[1].decision is not None and asked[1].decision.action is Action.ERROR


def test_the_first_forwarded_answer_already_has_its_ttls_within_the_bounds() -> None:
    async def scenario(server: FakeNameserver, config: CacheConfig) -> list[int]:
        forwarding = ForwardingStage(
            UpstreamPool([parse_upstream(server.hostport)]), AnswerCache(config)
        )
        try:
            query = udp_query("long.test")
            await forwarding.resolve(query)
        finally:
            await forwarding.pool.aclose()
        assert query.response is not None
        return [rrset.ttl for rrset in dns.message.from_wire(query.response).answer]

    with FakeNameserver(ttl_s=300) as server:
        assert asyncio.run(scenario(server, CacheConfig(max_ttl_s=200))) == [200]
        assert asyncio.run(scenario(server, CacheConfig(size=0, max_ttl_s=200))) == [200]
    with FakeNameserver(ttl_s=5) as server:
        assert asyncio.run(scenario(server, CacheConfig(min_ttl_s=60))) == [60]
        assert asyncio.run(scenario(server, CacheConfig())) == [5]
