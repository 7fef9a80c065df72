"""The attribution stage: which process sent the query, found while its socket still exists.

Description:
    Runs before any stage that can answer, so blocked and cached answers are attributed
    too: once the client has its answer it closes the socket and the trail is gone. A
    lookup has a time budget; when it runs out the query keeps what was found (the uid)
    and is answered anyway. The same client address and port within `reuse_s` is taken to
    be the same socket, so a program that sends many queries costs one lookup.
Configuration:
    attribution (on/off), attribution_budget_ms.
Example:
    attribution_budget_ms: 2
"""

from __future__ import annotations

import logging
from typing import ClassVar

from aidns.resolver.procinfo.common import ProcessLookup
from aidns.resolver.procinfo.tools import KnownTools
from aidns.resolver.query import ProcessInfo, Query, Transport

log = logging.getLogger(__name__)
REMEMBERED_CLIENTS = 4096


class AttributionStage:
    name: ClassVar[str] = "attribution"
    per_client: ClassVar[bool] = True

    def __init__(
        self,
        lookup: ProcessLookup,
        tools: KnownTools | None = None,
        budget_s: float = 0.002,
        reuse_s: float = 1.0,
    ) -> None:
        self.lookup = lookup
        self.tools = tools
        self.budget_s = budget_s
        self.reuse_s = reuse_s
        self._udp: dict[tuple[object, ...], tuple[float, ProcessInfo | None]] = {}
        self._tcp: dict[tuple[object, ...], tuple[float, ProcessInfo | None]] = {}
        self.lookups = 0
        self.failures = 0

    def answer(self, query: Query) -> bool:
        key = query.client  # UDP and TCP sockets may share a port: one table each
        recent = self._udp if query.transport is Transport.UDP else self._tcp
        now = query.received_at
        seen = recent.get(key)
        if seen is not None and now - seen[0] < self.reuse_s:
            query.process = seen[1]
            query.client_reusable_until = min(query.client_reusable_until, seen[0] + self.reuse_s)
            return False
        query.process = info = self._find(query)
        if len(recent) >= REMEMBERED_CLIENTS:
            recent.clear()  # thousands of clients within a second: start afresh
        recent[key] = (now, info)
        query.client_reusable_until = min(query.client_reusable_until, now + self.reuse_s)
        return False

    def _find(self, query: Query) -> ProcessInfo | None:
        self.lookups += 1
        try:
            info = self.lookup.find(query.transport, query.server, query.client, self.budget_s)
        except Exception:
            self.failures += 1
            if self.failures <= 3:
                log.exception("finding the process of %s failed; logged as unknown", query.client)
            return None
        if info is not None and self.tools is not None and info.tool is None:
            info = self.tools.tag(info)
        return info

    def forget(self) -> None:
        self._udp.clear()
        self._tcp.clear()
