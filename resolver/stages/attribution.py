"""The attribution stage: which process sent the query, found while its socket still exists.

Description:
    Runs before any stage that can answer, so blocked and cached answers are attributed
    too: once the client has its answer it closes the socket and the trail is gone. Each
    query's socket is named by the kernel's socket table (inode and cookie, about 5 µs on
    Linux); what was found is kept for that very socket, never for its address and port,
    which a short-lived program may hand on to the next one within milliseconds. A lookup has
    a time budget; when it runs out the query keeps what was found (the uid) and is answered
    anyway. Lookups may take at most LOOKUP_SHARE of the serving thread's time (after a first
    LOOKUP_CREDIT_S): a burst of new client sockets beyond that is answered at once, the
    process unknown.
Configuration:
    attribution (on/off), attribution_budget_ms.
Example:
    attribution_budget_ms: 2
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from aidns.resolver.faults import Faults
from aidns.resolver.procinfo.common import ProcessLookup, SocketOwner
from aidns.resolver.procinfo.tools import KnownTools
from aidns.resolver.query import ProcessInfo, Query, Transport

REMEMBERED_SOCKETS = 4096
LOOKUP_SHARE = 0.25  # of the time, at most, spent finding processes
LOOKUP_CREDIT_S = 0.05  # lookup time a burst may spend at once before the share applies
SKIPPED = ProcessInfo(None, None, note="not looked up: too many new clients at once")


class AttributionStage:
    name: ClassVar[str] = "attribution"
    per_client: ClassVar[bool] = True

    def __init__(
        self,
        lookup: ProcessLookup,
        tools: KnownTools | None = None,
        budget_s: float = 0.002,
        faults: Faults | None = None,
    ) -> None:
        self.lookup = lookup
        self.faults = faults or Faults()
        self.tools = tools
        self.budget_s = budget_s
        # (transport, inode, cookie) -> the process found holding that socket
        self._known: dict[tuple[Transport, int, int], ProcessInfo] = {}
        self.lookups = 0
        self.failures = 0
        self.skipped = 0
        self._credit_s = LOOKUP_CREDIT_S  # serving threads race on it: off by a lookup at worst
        self._credit_at = 0.0

    def answer(self, query: Query) -> bool:
        now = query.received_at
        owner = self._client_socket(query) if self.lookup.identifies_sockets else None
        if owner is not None:
            query.client_socket = owner.identity
            known = self._known.get((query.transport, owner.inode, owner.cookie))
            if known is not None:
                query.process = known
                return False
        elif self.lookup.identifies_sockets:
            query.client_reusable_until = min(query.client_reusable_until, now)
            return False  # the socket is gone already (or unreadable): nobody to find
        if not self._may_look_up(now):
            self.skipped += 1
            query.process = SKIPPED  # not remembered: the socket's next query tries again
            query.client_reusable_until = min(query.client_reusable_until, now)
            return False
        started = time.monotonic()
        query.process = info = self._find(query, owner)
        self._credit_s -= time.monotonic() - started
        if owner is None or info is None or info.pid is None:
            if owner is not None or info is not None:
                # not known for this very socket: its next query looks again
                query.client_reusable_until = min(query.client_reusable_until, now)
            return False
        if len(self._known) >= REMEMBERED_SOCKETS:
            self._known.clear()  # thousands of sockets alive at once: start afresh
        self._known[(query.transport, owner.inode, owner.cookie)] = info
        return False

    def same_socket(
        self, server: tuple[Any, ...], client: tuple[Any, ...], socket: tuple[int, int]
    ) -> bool:
        """True while the UDP client at `client` still holds `socket` (inode, cookie): the
        pipeline's check before it answers a repeated question without the stages."""
        try:
            owner = self.lookup.client_socket(Transport.UDP, server, client, fallback_s=0.0)
        except Exception:
            return False
        return owner is not None and owner.identity == socket

    def _client_socket(self, query: Query) -> SocketOwner | None:
        try:
            return self.lookup.client_socket(query.transport, query.server, query.client)
        except Exception as exc:
            self.failures += 1
            self.faults.unexpected("finding the socket of a query", exc)
            return None

    def _may_look_up(self, now: float) -> bool:
        earned = max(now - self._credit_at, 0.0) * LOOKUP_SHARE
        self._credit_s = min(self._credit_s + earned, LOOKUP_CREDIT_S)
        self._credit_at = max(now, self._credit_at)
        return self._credit_s > 0

    def _find(self, query: Query, owner: SocketOwner | None) -> ProcessInfo | None:
        self.lookups += 1
        try:
            info = self.lookup.find(
                query.transport, query.server, query.client, self.budget_s, owner=owner
            )
        except Exception as exc:
            self.failures += 1
            self.faults.unexpected("finding the process of a query", exc)
            return None
        if info is not None and self.tools is not None and info.tool is None:
            info = self.tools.tag(info)
        return info

    def forget(self) -> None:
        self._known.clear()
