"""The forwarding stage: asks the upstreams, and hands cacheable answers to the cache.

Description:
    Sends the client's query, unchanged but for its ID, to the best upstream (see
    upstream.py), fails over on timeout or SERVFAIL, and when none answered within the
    budget answers from an expired cache entry (see caching.py) or else SERVFAIL.
    Identical questions in flight at once are asked once.
Configuration:
    upstream (repeatable), upstream_timeout_s.
Example:
    upstream: ["tls://9.9.9.9#dns.quad9.net", "192.168.1.1"]
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import ClassVar

from aidns.resolver.errors import UpstreamError
from aidns.resolver.query import Action, Decision, Query, Rcode
from aidns.resolver.replies import reply
from aidns.resolver.stages.caching import AnswerCache
from aidns.resolver.upstream.pool import UpstreamPool

log = logging.getLogger(__name__)
_FORWARDED = Decision(Action.FORWARDED)


class ForwardingStage:
    name: ClassVar[str] = "forwarding"

    def __init__(self, pool: UpstreamPool, cache: AnswerCache) -> None:
        self.pool = pool
        self.cache = cache
        self._in_flight: dict[bytes, asyncio.Future[None]] = {}
        self._warned_down = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._prefetching: set[asyncio.Task[None]] = set()
        cache.prefetch = self.prefetch

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
        self._loop = asyncio.get_running_loop()
        key = query.cache_key()
        leader = self._in_flight.get(key)
        if leader is not None:
            await asyncio.shield(leader)
            cached = self.cache.recall(query, time.monotonic())
            if cached is not None:
                query.response = cached
                if query.decision is None:
                    query.decision = Decision(Action.CACHED)
                return
        future = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            await self._forward(query)
        finally:
            del self._in_flight[key]
            future.set_result(None)

    async def _forward(self, query: Query) -> None:
        try:
            response, upstream = await self.pool.resolve(query.raw)
        except UpstreamError as exc:
            if not self._warned_down:
                log.warning(
                    "no upstream answered (%s); answering from expired cache entries, "
                    "else SERVFAIL, until one does",
                    exc,
                )
                self._warned_down = True
            if not self._answer_stale(query):
                query.response = reply(query, Rcode.SERVFAIL)
                query.decision = Decision(Action.ERROR, rule=str(exc))
            return
        if response[3] & 0x0F == Rcode.SERVFAIL and self._answer_stale(query):
            log.debug("%s: every upstream said SERVFAIL; answered stale", query.name)
            return
        self._warned_down = False
        query.response = response
        query.upstream = str(upstream.spec)
        if query.decision is None:
            query.decision = _FORWARDED
        self.cache.store(query, response)

    def _answer_stale(self, query: Query) -> bool:
        stale = self.cache.serve_stale(query, time.monotonic())
        if stale is None:
            return False
        query.response = stale
        return True
