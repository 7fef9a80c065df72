"""The forwarding stage: asks the upstreams, and hands cacheable answers to the cache.

Description:
    Sends the client's query, unchanged but for its ID, to the best upstream (see
    upstream.py), fails over on timeout or SERVFAIL, and when none answered within the
    budget answers from an expired cache entry (see caching.py) or else SERVFAIL.
    Identical queries in flight at once (the same bytes but for the ID and the name's case)
    share one exchange: each gets its answer, with its own ID and question, when that one
    ends, so all within the one budget. At most MAX_UPSTREAM_QUERIES_IN_FLIGHT exchanges run
    at once; a query beyond them is answered at once, stale or SERVFAIL, and counted.
Configuration:
    upstream (repeatable), upstream_timeout_s.
Example:
    upstream: ["tls://9.9.9.9#dns.quad9.net", "192.168.1.1"]
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar, NamedTuple

from aidns.resolver.errors import UpstreamError
from aidns.resolver.faults import Faults
from aidns.resolver.query import Action, Decision, Query, Rcode
from aidns.resolver.replies import reply
from aidns.resolver.stages.caching import STALE, AnswerCache, clamp_ttls
from aidns.resolver.stages.cnames import CnameInspection
from aidns.resolver.tcpclients import FD_RESERVE
from aidns.resolver.upstream.pool import UpstreamPool

MAX_UPSTREAM_QUERIES_IN_FLIGHT = 1024  # exchanges at once; beyond it stale or SERVFAIL at once
NO_UPSTREAM = "no upstream answered"
OVER_LIMIT = "upstream queries over the in-flight limit"
_FORWARDED = Decision(Action.FORWARDED)


class _Outcome(NamedTuple):
    """What one exchange brought: for the query that asked and those that waited on it."""

    response: bytes  # with the asking query's ID and question
    decision: Decision
    upstream: str | None = None
    replaces: bool = False  # an error replaces the verdict of earlier stages but `watched`

    def apply(self, query: Query, shared: bool) -> None:
        query.response = _reframed(query, self.response) if shared else self.response
        query.upstream = self.upstream
        earlier = query.decision
        blocks = self.decision.action is Action.BLOCKED
        if earlier is None or (self.replaces and (blocks or earlier.action is not Action.WATCHED)):
            query.decision = self.decision  # a watched name stays watched: its rcode tells


def _reframed(query: Query, response: bytes) -> bytes:
    """An answer to an identical query, given this query's ID and question (name case)."""
    end = query.question_end
    if response[4:6] == b"\x00\x01" and len(response) >= end:
        return query.raw[:2] + response[2:12] + query.raw[12:end] + response[end:]
    return query.raw[:2] + response[2:]


def _sharing_key(query: Query) -> bytes:
    """The query's bytes but for the ID, name in lower case: queries that may share an answer."""
    raw, end = query.raw, query.question_end
    return raw[2:12] + raw[12:end].lower() + raw[end:]


def upstream_query_limit(open_files: int | None, tcp_clients: int) -> int:
    """Upstream queries in flight: each holds a descriptor, so at most what the open-files
    limit leaves after the TCP clients and the reserve, and never fewer than 16."""
    if open_files is None:
        return MAX_UPSTREAM_QUERIES_IN_FLIGHT
    room = open_files - tcp_clients - FD_RESERVE
    return max(16, min(MAX_UPSTREAM_QUERIES_IN_FLIGHT, room))


class ForwardingStage:
    name: ClassVar[str] = "forwarding"

    def __init__(
        self,
        pool: UpstreamPool,
        cache: AnswerCache,
        faults: Faults | None = None,
        max_in_flight: int = MAX_UPSTREAM_QUERIES_IN_FLIGHT,
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.faults = faults or Faults()
        self.max_in_flight = max_in_flight
        self.shared = 0  # queries answered by an exchange another query started
        self._in_flight: dict[bytes, asyncio.Future[_Outcome]] = {}  # owned by the event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._prefetching: set[asyncio.Task[None]] = set()
        cache.prefetch = self.prefetch
        self.inspection: CnameInspection | None = None  # set when cname_inspection is on

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def prefetch(self, query: Query) -> None:
        """Ask again in the background for a cached answer about to expire; from any thread."""
        if self._loop is not None and not self._loop.is_closed():
            refresh = Query(query.raw, (), query.transport, time.monotonic(), query.server)
            self._loop.call_soon_threadsafe(self._start_prefetch, refresh)

    def _start_prefetch(self, query: Query) -> None:
        task = asyncio.ensure_future(self.resolve(query))
        self._prefetching.add(task)
        task.add_done_callback(self._prefetching.discard)

    async def aclose(self) -> None:
        for task in list(self._prefetching):
            task.cancel()
        await asyncio.gather(*self._prefetching, return_exceptions=True)

    async def resolve(self, query: Query) -> None:
        loop = self._loop = asyncio.get_running_loop()
        key = _sharing_key(query)
        exchange = self._in_flight.get(key)
        if exchange is not None:
            self.shared += 1
            (await asyncio.shield(exchange)).apply(query, shared=True)
            return
        if len(self._in_flight) >= self.max_in_flight:
            self._answer_over_limit(query)
            return
        exchange = loop.create_future()
        self._in_flight[key] = exchange
        outcome: _Outcome | None = None
        try:
            outcome = await self._forward(query)
            outcome.apply(query, shared=False)
        finally:
            if self._in_flight.get(key) is exchange:
                del self._in_flight[key]
            # those waiting are answered even when this one failed or was cancelled
            exchange.set_result(outcome or _failure(query, "the exchange was abandoned"))

    def _answer_over_limit(self, query: Query) -> None:
        self.faults.note(
            OVER_LIMIT,
            "%d upstream queries in flight, the most allowed; further questions are "
            "answered from expired cache entries, else SERVFAIL, without asking",
            self.max_in_flight,
        )
        outcome = self._stale(query) or _failure(query, "too many upstream queries in flight")
        outcome.apply(query, shared=False)

    async def _forward(self, query: Query) -> _Outcome:
        try:
            response, upstream = await self.pool.resolve(query.raw)
        except UpstreamError as exc:
            self.faults.note(
                NO_UPSTREAM,
                "no upstream answered (%s); answering from expired cache entries, "
                "else SERVFAIL, until one does",
                exc,
            )
            return self._stale(query) or _failure(query, str(exc))
        if response[3] & 0x0F == Rcode.SERVFAIL:
            stale = self._stale(query)
            if stale is not None:
                return stale
        if self.inspection is not None:
            found = self.inspection.blocked(query, response)
            if found is not None:  # not cached: a rule change frees it at once
                return _Outcome(found[0], found[1], str(upstream.spec), replaces=True)
        self.cache.store(query, response)
        response = clamp_ttls(response, query.question_end, self.cache.config)
        return _Outcome(response, _FORWARDED, str(upstream.spec))

    def _stale(self, query: Query) -> _Outcome | None:
        stale = self.cache.serve_stale(query, time.monotonic())
        return None if stale is None else _Outcome(stale, STALE)


def _failure(query: Query, why: str) -> _Outcome:
    return _Outcome(reply(query, Rcode.SERVFAIL), Decision(Action.ERROR, rule=why), replaces=True)
