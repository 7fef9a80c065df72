"""The attribution stage: which process sent the query, found while its socket still exists.

Description:
    Runs before any stage that can answer, so blocked and cached answers are attributed
    too: once the client has its answer it closes the socket and the trail is gone. A
    lookup has a time budget; when it runs out the query keeps what was found (the uid)
    and is answered anyway. The same client address and port within `reuse_s` is taken to
    be the same socket, so a program that sends many queries costs one lookup. Lookups may
    take at most LOOKUP_SHARE of the serving thread's time (after a first LOOKUP_CREDIT_S):
    a burst of new client sockets beyond that is answered at once, the process unknown.
Configuration:
    attribution (on/off), attribution_budget_ms.
Example:
    attribution_budget_ms: 2
"""

from __future__ import annotations

import time
from typing import ClassVar

from aidns.resolver.faults import Faults
from aidns.resolver.procinfo.common import ProcessLookup
from aidns.resolver.procinfo.tools import KnownTools
from aidns.resolver.query import ProcessInfo, Query, Transport

REMEMBERED_CLIENTS = 4096
LOOKUP_SHARE = 0.25  # of the time, at most, spent finding processes
LOOKUP_CREDIT_S = 0.05  # lookup time a burst may spend at once before the share applies
_UDP = Transport.UDP  # a module global: an enum member read off its class costs 0.1 us
SKIPPED = ProcessInfo(None, None, note="not looked up: too many new clients at once")


class AttributionStage:
    name: ClassVar[str] = "attribution"
    per_client: ClassVar[bool] = True

    def __init__(
        self,
        lookup: ProcessLookup,
        tools: KnownTools | None = None,
        budget_s: float = 0.002,
        reuse_s: float = 1.0,
        faults: Faults | None = None,
    ) -> None:
        self.lookup = lookup
        self.faults = faults or Faults()
        self.tools = tools
        self.budget_s = budget_s
        self.reuse_s = reuse_s
        self._udp: dict[tuple[object, ...], tuple[float, ProcessInfo | None]] = {}
        self._tcp: dict[tuple[object, ...], tuple[float, ProcessInfo | None]] = {}
        self.lookups = 0
        self.failures = 0
        self.skipped = 0
        self._credit_s = LOOKUP_CREDIT_S  # serving threads race on it: off by a lookup at worst
        self._credit_at = 0.0

    def answer(self, query: Query) -> bool:
        key = query.client  # UDP and TCP sockets may share a port: one table each
        recent = self._udp if query.transport is _UDP else self._tcp
        now = query.received_at
        seen = recent.get(key)
        if seen is not None and now - seen[0] < self.reuse_s:
            query.process = seen[1]
            query.client_reusable_until = min(query.client_reusable_until, seen[0] + self.reuse_s)
            return False
        if not self._may_look_up(now):
            self.skipped += 1
            query.process = SKIPPED  # not remembered: the socket's next query tries again
            query.client_reusable_until = min(query.client_reusable_until, now)
            return False
        started = time.monotonic()
        query.process = info = self._find(query)
        self._credit_s -= time.monotonic() - started
        if len(recent) >= REMEMBERED_CLIENTS:
            recent.clear()  # thousands of clients within a second: start afresh
        recent[key] = (now, info)
        query.client_reusable_until = min(query.client_reusable_until, now + self.reuse_s)
        return False

    def _may_look_up(self, now: float) -> bool:
        earned = max(now - self._credit_at, 0.0) * LOOKUP_SHARE
        self._credit_s = min(self._credit_s + earned, LOOKUP_CREDIT_S)
        self._credit_at = max(now, self._credit_at)
        return self._credit_s > 0

    def _find(self, query: Query) -> ProcessInfo | None:
        self.lookups += 1
        try:
            info = self.lookup.find(query.transport, query.server, query.client, self.budget_s)
        except Exception as exc:
            self.failures += 1
            self.faults.unexpected("finding the process of a query", exc)
            return None
        if info is not None and self.tools is not None and info.tool is None:
            info = self.tools.tag(info)
        return info

    def forget(self) -> None:
        self._udp.clear()
        self._tcp.clear()
