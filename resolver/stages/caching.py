"""The answer cache: upstream answers kept for their TTL, served with TTLs counted down.

Description:
    Positive answers live for their smallest TTL, negative ones (NXDOMAIN, NODATA) for the
    SOA's TTL capped by its MINIMUM field (RFC 2308). Entries are stored as the upstream's
    bytes after the question plus the offsets of every TTL, so a hit is served by patching
    a few integers, not by parsing. The client's OPT record is our own, never the upstream's.
    When no upstream answers, an answer that expired less than `cache_serve_stale` ago is
    served with a TTL of 30 s, and for those 30 s without asking again (RFC 8767). A name
    asked in the last tenth of its TTL (at least its last second) is asked upstream again in
    the background, once, so names in use do not expire (prefetch, as Unbound does).
Configuration:
    cache_size (entries, 0 turns caching off), cache_max_ttl, cache_min_ttl,
    cache_serve_stale (seconds, 0 turns it off).
Example:
    cache_size: 20000
"""

from __future__ import annotations

import itertools
import math
import struct
import threading
import time
from collections.abc import Callable
from typing import ClassVar

from aidns.resolver.config import CacheConfig
from aidns.resolver.query import OPT, Action, Decision, Query, Rcode, skip_name
from aidns.resolver.replies import EDE_STALE_ANSWER, edns_record, extended_error

_RR_FIXED = struct.Struct("!HHIH")
_TTL = struct.Struct("!I")
_COUNTS = struct.Struct("!HHHH")
TYPE_SOA = 6
STALE_TTL_S = 30  # RFC 8767: the TTL of a stale answer, and how long before asking again
PREFETCH_SHARE = 0.1  # of the TTL, at its end: a hit then asks the upstream again
MIN_PREFETCH_TTL_S = 5  # shorter answers are left to expire
EVICTION_BATCH_SHARE = 64  # a full cache drops 1/64 of its entries, the oldest, at once


STALE = Decision(Action.CACHED, rule="stale: no upstream answered")


class CachedAnswer:
    """An upstream answer stripped of header, question and OPT; rendered once per second of age."""

    __slots__ = (
        "counts",
        "expires_at",
        "flags",
        "prefetch_at",
        "rendered",
        "rendered_age",
        "rest",
        "stale_until",
        "stored_at",
        "ttls",
    )

    def __init__(
        self,
        flags: int,
        counts: tuple[int, int, int],
        rest: bytes,
        ttls: list[tuple[int, int]],
        ttl_s: int,
    ):
        now = time.monotonic()
        self.flags = flags
        self.counts = counts
        self.rest = rest
        self.ttls = ttls
        self.stored_at = now
        self.expires_at = now + ttl_s
        self.rendered_age = 0
        self.rendered = self._with_ttls(0, None)  # the bounds may have changed a TTL
        self.stale_until = 0.0
        lead_s = max(ttl_s * PREFETCH_SHARE, 1.0)
        self.prefetch_at = self.expires_at - lead_s if ttl_s >= MIN_PREFETCH_TTL_S else math.inf

    def body(self, now: float) -> bytes:
        age = int(now - self.stored_at)
        if age != self.rendered_age:
            self.rendered = self._with_ttls(age, None)
            self.rendered_age = age
        return self.rendered

    def stale_body(self) -> bytes:
        return self._with_ttls(0, STALE_TTL_S)

    def _with_ttls(self, age: int, every_ttl: int | None) -> bytes:
        patched = bytearray(self.rest)
        for offset, ttl in self.ttls:
            _TTL.pack_into(patched, offset, every_ttl or max(ttl - age, 0))
        return bytes(patched)


def parse_answer(response: bytes, question_end: int, config: CacheConfig) -> CachedAnswer | None:
    """A cache entry for a response, or None when it must not be cached."""
    if len(response) < question_end:
        return None
    flags = response[2] << 8 | response[3]
    rcode = flags & 0xF
    if flags & 0x0200 or rcode not in (Rcode.NOERROR, Rcode.NXDOMAIN):
        return None
    answers, authority, additional = struct.unpack_from("!HHH", response, 6)
    ttls: list[tuple[int, int]] = []
    kept: list[bytes] = []
    kept_additional = 0
    answer_ttl: int | None = None
    negative_ttl: int | None = None
    pos = question_end
    try:
        for index in range(answers + authority + additional):
            start = pos
            pos = skip_name(response, pos)
            rtype, _rclass, ttl, rdlength = _RR_FIXED.unpack_from(response, pos)
            end = pos + 10 + rdlength
            if end > len(response):
                return None
            if rtype == OPT:
                if index != answers + authority + additional - 1:
                    return None  # later records could point past it
                pos = end
                continue
            offset = sum(map(len, kept)) + (pos - start) + 4
            ttls.append((offset, ttl))
            if index < answers:
                answer_ttl = ttl if answer_ttl is None else min(answer_ttl, ttl)
            elif index < answers + authority and rtype == TYPE_SOA:
                minimum = struct.unpack_from("!I", response, end - 4)[0]
                negative_ttl = min(ttl, minimum)
            if index >= answers + authority:
                kept_additional += 1
            kept.append(response[start:end])
            pos = end
    except (IndexError, struct.error, ValueError):
        return None
    if rcode == Rcode.NOERROR and answer_ttl is not None:
        ttl_s = answer_ttl
    elif negative_ttl is not None:
        ttl_s = negative_ttl
    else:
        return None
    ttl_s = min(max(ttl_s, config.min_ttl_s), config.max_ttl_s)
    if ttl_s <= 0:
        return None
    low, high = config.min_ttl_s, config.max_ttl_s
    ttls = [(offset, min(max(ttl, low), high)) for offset, ttl in ttls]
    return CachedAnswer(flags, (answers, authority, kept_additional), b"".join(kept), ttls, ttl_s)


def clamp_ttls(response: bytes, question_end: int, config: CacheConfig) -> bytes:
    """`response` with every record's TTL kept within the cache's bounds, as clients see a
    cached answer; the same bytes when none is out of them, or the response can't be read."""
    low, high = config.min_ttl_s, config.max_ttl_s
    if len(response) < 12:
        return response
    patched: bytearray | None = None
    pos = question_end
    try:
        for _ in range(sum(struct.unpack_from("!HHH", response, 6))):
            pos = skip_name(response, pos)
            rtype, _rclass, ttl, rdlength = _RR_FIXED.unpack_from(response, pos)
            if rtype != OPT and not low <= ttl <= high:
                patched = patched or bytearray(response)
                _TTL.pack_into(patched, pos + 4, min(max(ttl, low), high))
            pos += 10 + rdlength
    except (IndexError, struct.error, ValueError):
        return response
    return bytes(patched) if patched is not None else response


class AnswerCache:
    """Bounded map from (name, type, class, DO, CD) to CachedAnswer; oldest entries go first."""

    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self._entries: dict[bytes, CachedAnswer] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.stale_hits = 0
        self.prefetches = 0
        self.prefetch: Callable[[Query], None] | None = None  # asks again without waiting

    def __len__(self) -> int:
        return len(self._entries)

    def recall(self, query: Query, now: float) -> bytes | None:
        """The cached reply to `query`, TTLs counted down to `now`; None on a miss."""
        entry = self._entries.get(query.cache_key())
        if entry is None or entry.expires_at <= now:
            if entry is not None and entry.stale_until > now:  # the upstreams failed just now
                return self._render_stale(query, entry)
            self.misses += 1
            return None
        self.hits += 1
        if now >= entry.prefetch_at and self.prefetch is not None:
            entry.prefetch_at = math.inf  # once per entry: the refreshed one starts anew
            self.prefetches += 1
            self.prefetch(query)
        age = int(now - entry.stored_at)
        query.reusable_until = min(entry.expires_at, entry.stored_at + age + 1)
        return self._render(query, entry, entry.body(now))

    def serve_stale(self, query: Query, now: float) -> bytes | None:
        """For when no upstream answered: an answer that expired less than `serve_stale_s`
        ago, with TTL 30 s, and again for the next 30 s without asking; else None."""
        entry = self._entries.get(query.cache_key())
        if entry is None or not 0 <= now - entry.expires_at <= self.config.serve_stale_s:
            return None  # none, too old, or not expired: a failed refresh leaves it be
        entry.stale_until = now + STALE_TTL_S
        return self._render_stale(query, entry)

    def _render_stale(self, query: Query, entry: CachedAnswer) -> bytes:
        self.stale_hits += 1
        if query.decision is None:
            query.decision = STALE
        why = extended_error(EDE_STALE_ANSWER) if self.config.extended_errors else b""
        return self._render(query, entry, entry.stale_body(), why)

    def _render(
        self, query: Query, entry: CachedAnswer, body: bytes, options: bytes = b""
    ) -> bytes:
        raw = query.raw
        answers, authority, additional = entry.counts
        opt = b""
        if query.has_edns:
            opt = edns_record(query.dnssec_ok, options=options)
            additional += 1
        flags = entry.flags
        return b"".join(
            (
                raw[:2],
                bytes((((flags >> 8) & 0xFE) | (raw[2] & 0x01), (flags & 0xEF) | (raw[3] & 0x10))),
                _COUNTS.pack(1, answers, authority, additional),
                raw[12 : query.question_end],
                body,
                opt,
            )
        )

    def store(self, query: Query, response: bytes) -> None:
        if self.config.size <= 0:
            return
        entry = parse_answer(response, query.question_end, self.config)
        if entry is None:
            return
        key = query.cache_key()
        with self._lock:
            entries = self._entries
            entries.pop(key, None)
            if len(entries) >= self.config.size:
                # the oldest few at once: finding the first entry walks the slots freed before it
                excess = len(entries) - self.config.size + 1
                batch = max(excess, self.config.size // EVICTION_BATCH_SHARE)
                for old in list(itertools.islice(entries, batch)):
                    del entries[old]
            entries[key] = entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_CACHED = Decision(Action.CACHED)


class CachingStage:
    name: ClassVar[str] = "caching"
    per_client: ClassVar[bool] = False
    renews: ClassVar[bool] = True  # a remembered answer's next second is rendered here

    def __init__(self, cache: AnswerCache) -> None:
        self.cache = cache

    def answer(self, query: Query) -> bool:
        response = self.cache.recall(query, time.monotonic())
        if response is None:
            return False
        if query.decision is None:
            query.decision = _CACHED
        query.response = response
        return True
