from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from aidns.resolver.config import CacheConfig
from aidns.resolver.query import Action
from aidns.resolver.stages.caching import AnswerCache, CachingStage, parse_answer

from .helpers import make_query


def upstream_answer(
    query_wire: bytes, *records: str, rcode: int = dns.rcode.NOERROR, authority: str = ""
) -> bytes:
    request = dns.message.from_wire(query_wire)
    response = dns.message.make_response(request)
    response.set_rcode(rcode)
    for text in records:
        response.answer.append(rrset(text))
    if authority:
        response.authority.append(rrset(authority))
    return response.to_wire()


def rrset(text: str) -> dns.rrset.RRset:
    name, ttl, rdtype, rdata = text.split(maxsplit=3)
    return dns.rrset.from_text(name, int(ttl), "IN", rdtype, rdata)


SOA = "example. 900 SOA ns.example. host.example. 1 7200 900 1209600 300"


def test_positive_answer_served_with_ttl_counted_down() -> None:
    cache = AnswerCache(CacheConfig())
    first = make_query("www.example.", "A")
    cache.store(
        first,
        upstream_answer(first.raw, "www.example. 100 A 192.0.2.1", "www.example. 50 A 192.0.2.2"),
    )
    second = make_query("WWW.Example.", "A")
    entry_time = cache._entries[second.cache_key()].stored_at
    response = cache.recall(second, entry_time + 10.5)
    assert response is not None
    message = dns.message.from_wire(response)
    assert message.id == second.id
    assert str(message.question[0].name) == "WWW.Example."
    assert message.answer[0].ttl == 40  # the smallest TTL of the RRset, minus ten seconds
    assert cache.recall(second, entry_time + 50.5) is None


def test_negative_answers_use_soa_minimum() -> None:
    config = CacheConfig()
    query = make_query("nope.example.")
    nxdomain = upstream_answer(query.raw, rcode=dns.rcode.NXDOMAIN, authority=SOA)
    entry = parse_answer(nxdomain, query.question_end, config)
    assert entry is not None and round(entry.expires_at - entry.stored_at) == 300
    nodata = upstream_answer(
        query.raw, authority=SOA.replace(" 300", " 5000").replace(" 900 SOA", " 60 SOA")
    )
    entry = parse_answer(nodata, query.question_end, config)
    assert entry is not None and round(entry.expires_at - entry.stored_at) == 60
    assert (
        parse_answer(
            upstream_answer(query.raw, rcode=dns.rcode.NXDOMAIN), query.question_end, config
        )
        is None
    )


def test_not_cached_servfail_truncated_zero_ttl() -> None:
    config = CacheConfig()
    query = make_query("a.example.")
    assert (
        parse_answer(
            upstream_answer(query.raw, rcode=dns.rcode.SERVFAIL), query.question_end, config
        )
        is None
    )
    truncated = bytearray(upstream_answer(query.raw, "a.example. 60 A 192.0.2.1"))
    truncated[2] |= 0x02
    assert parse_answer(bytes(truncated), query.question_end, config) is None
    assert (
        parse_answer(
            upstream_answer(query.raw, "a.example. 0 A 192.0.2.1"), query.question_end, config
        )
        is None
    )
    assert parse_answer(b"\x00" * 40, query.question_end, config) is None


def test_cached_answer_carries_our_opt_not_the_upstreams() -> None:
    cache = AnswerCache(CacheConfig())
    with_edns = make_query("a.example.", dnssec=True)
    cache.store(with_edns, upstream_answer(with_edns.raw, "a.example. 60 A 192.0.2.1"))
    again = make_query("a.example.", dnssec=True)
    message = dns.message.from_wire(
        cache.recall(again, cache._entries[again.cache_key()].stored_at) or b""
    )
    assert message.edns == 0 and message.ednsflags & dns.flags.DO
    assert message.payload == 1232


def test_bounded_in_entries() -> None:
    cache = AnswerCache(CacheConfig(size=3))
    for i in range(5):
        query = make_query(f"n{i}.example.")
        cache.store(query, upstream_answer(query.raw, f"n{i}.example. 60 A 192.0.2.1"))
    assert len(cache) == 3
    assert cache.recall(make_query("n0.example."), 0.0) is None


def test_stage_marks_cached_but_keeps_a_watch_tag() -> None:
    cache = AnswerCache(CacheConfig())
    stage = CachingStage(cache)
    query = make_query("api.example.")
    assert not stage.answer(query)
    cache.store(query, upstream_answer(query.raw, "api.example. 60 A 192.0.2.1"))
    hit = make_query("api.example.")
    assert stage.answer(hit) and hit.decision is not None and hit.decision.action is Action.CACHED


def stored(cache: AnswerCache, name: str = "www.example.", ttl: int = 100) -> float:
    query = make_query(name)
    cache.store(query, upstream_answer(query.raw, f"{name} {ttl} A 192.0.2.1"))
    return cache._entries[query.cache_key()].expires_at


def test_an_expired_answer_is_served_stale_only_when_asked_to() -> None:
    cache = AnswerCache(CacheConfig())
    expired_at = stored(cache)
    query = make_query("www.example.")
    assert cache.recall(query, expired_at + 5) is None  # expired: ask the upstream first
    stale = cache.serve_stale(query, expired_at + 5)  # the upstream did not answer
    assert stale is not None
    message = dns.message.from_wire(stale)
    assert (message.id, message.answer[0].ttl) == (query.id, 30)
    assert [r.address for r in message.answer[0]] == ["192.0.2.1"]
    assert query.decision is not None and query.decision.rule.startswith("stale")
    assert query.reusable_until == 0.0  # never remembered as if fresh


def test_for_30_s_after_a_stale_answer_the_cache_answers_stale_itself() -> None:
    cache = AnswerCache(CacheConfig())
    expired_at = stored(cache)
    assert cache.serve_stale(make_query("www.example."), expired_at + 1) is not None
    again = make_query("www.example.")
    response = cache.recall(again, expired_at + 20)
    assert response is not None and dns.message.from_wire(response).answer[0].ttl == 30
    assert again.decision is not None and again.decision.rule.startswith("stale")
    assert cache.recall(make_query("www.example."), expired_at + 32) is None  # ask again
    assert cache.stale_hits == 2


def test_too_old_or_switched_off_means_no_stale_answer() -> None:
    cache = AnswerCache(CacheConfig(serve_stale_s=3600))
    expired_at = stored(cache)
    assert cache.serve_stale(make_query("www.example."), expired_at + 3599) is not None
    assert cache.serve_stale(make_query("www.example."), expired_at + 3601) is None
    assert cache.serve_stale(make_query("other.example."), expired_at) is None
    off = AnswerCache(CacheConfig(serve_stale_s=0))
    expired_at = stored(off)
    assert off.serve_stale(make_query("www.example."), expired_at + 1) is None


def test_cached_ttls_are_kept_within_the_configured_bounds() -> None:
    cache = AnswerCache(CacheConfig(min_ttl_s=20, max_ttl_s=60))
    query = make_query("www.example.")
    cache.store(
        query,
        upstream_answer(query.raw, "www.example. 300 A 192.0.2.1", "www.example. 5 TXT hello"),
    )
    entry = cache._entries[query.cache_key()]
    response = cache.recall(make_query("www.example."), entry.stored_at + 0.5)
    assert response is not None
    assert [rrset.ttl for rrset in dns.message.from_wire(response).answer] == [60, 20]


def test_a_hit_in_the_last_tenth_of_the_ttl_asks_for_a_refresh_once() -> None:
    cache = AnswerCache(CacheConfig())
    asked: list[str] = []
    cache.prefetch = lambda query: asked.append(query.name)
    expires_at = stored(cache, ttl=100)
    assert cache.recall(make_query("www.example."), expires_at - 11) is not None
    assert asked == []
    assert cache.recall(make_query("www.example."), expires_at - 9) is not None
    assert cache.recall(make_query("www.example."), expires_at - 5) is not None
    assert asked == ["www.example"] and cache.prefetches == 1
    refreshed_expires_at = stored(cache, ttl=100)  # the refreshed answer starts its own clock
    assert cache.recall(make_query("www.example."), refreshed_expires_at - 50) is not None
    assert asked == ["www.example"]
    assert cache.recall(make_query("www.example."), refreshed_expires_at - 5) is not None
    assert asked == ["www.example"] * 2


def test_short_ttls_are_left_to_expire_and_the_last_second_counts() -> None:
    cache = AnswerCache(CacheConfig())
    asked: list[str] = []
    cache.prefetch = lambda query: asked.append(query.name)
    short = stored(cache, "short.example.", ttl=4)
    assert cache.recall(make_query("short.example."), short - 0.5) is not None
    ten = stored(cache, "ten.example.", ttl=10)
    assert cache.recall(make_query("ten.example."), ten - 0.9) is not None  # 1 s, not 10%
    assert asked == ["ten.example"]


def test_an_answer_not_yet_expired_is_never_served_as_stale() -> None:
    cache = AnswerCache(CacheConfig())
    expires_at = stored(cache)
    assert (
        cache.serve_stale(make_query("www.example."), expires_at - 10) is None
    )  # a refresh failed
    assert cache.recall(make_query("www.example."), expires_at + 1) is None  # so: ask upstream
    assert cache.stale_hits == 0
