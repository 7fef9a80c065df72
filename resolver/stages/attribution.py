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
    process unknown. When the budget ran out (or a lookup was skipped) but the socket is
    known, the search goes on after the answer, on a thread of its own, for at most
    LATER_BUDGET_S, while the program still holds its socket; the log is told of the query
    once that search ends (see Pipeline.finish): within LATER_WAIT_S + 2 * LATER_BUDGET_S
    (0.2 s) of its arrival, since a socket that waited longer for its turn is not searched.
Configuration:
    attribution (on/off), attribution_budget_ms.
Example:
    attribution_budget_ms: 2
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

from aidns.resolver.faults import Faults
from aidns.resolver.procinfo.common import ProcessLookup, SocketOwner, out_of_time
from aidns.resolver.procinfo.tools import KnownTools
from aidns.resolver.query import ProcessInfo, Query, Transport

log = logging.getLogger(__name__)

Report = Callable[[Query, int], None]  # the pipeline's: tells its observers of a query

REMEMBERED_SOCKETS = 4096
LOOKUP_SHARE = 0.25  # of the time, at most, spent finding processes
LOOKUP_CREDIT_S = 0.05  # lookup time a burst may spend at once before the share applies
SKIPPED = ProcessInfo(None, None, note="not looked up: too many new clients at once")
LATER_BUDGET_S = 0.05  # a search goes on this long after the answer, at most
LATER_WAIT_S = 0.1  # a socket waiting longer than this for its turn is not searched for
LATER_PENDING = 64  # searches waiting to go on; beyond that, a query is logged as it is


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
        self.later = LaterSearches(self._search_later, self._found_later)

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
        if owner is not None and self.later.join(query, owner):
            # its socket's first query is being searched for still: one search does for both
            query.process = ProcessInfo(None, None, uid=owner.uid, note=self._out_of_time)
            query.process_pending = True
            query.client_reusable_until = min(query.client_reusable_until, now)
            return False
        if not self._may_look_up(now):
            self.skipped += 1
            query.process = SKIPPED  # not remembered: the socket's next query tries again
            query.client_reusable_until = min(query.client_reusable_until, now)
            if owner is not None:
                self._search_on(query, owner)
            return False
        started = time.monotonic()
        query.process = info = self._find(query, owner)
        self._credit_s -= time.monotonic() - started
        if owner is None or info is None or info.pid is None:
            if owner is not None or info is not None:
                # not known for this very socket: its next query looks again
                query.client_reusable_until = min(query.client_reusable_until, now)
            if owner is not None and info is not None and info.note == self._out_of_time:
                self._search_on(query, owner)
            return False
        if len(self._known) >= REMEMBERED_SOCKETS:
            self._known.clear()  # thousands of sockets alive at once: start afresh
        self._known[(query.transport, owner.inode, owner.cookie)] = info
        return False

    @property
    def _out_of_time(self) -> str:
        return out_of_time(self.budget_s)

    def _search_on(self, query: Query, owner: SocketOwner) -> None:
        if self.later.start(query, owner):
            query.process_pending = True

    def settle(self, query: Query, report: Report) -> bool:
        """For the pipeline, once `query` is answered: True when its search still goes on,
        and `report(query, 1)` is called when it ends."""
        return self.later.settle(query, report)

    def _search_later(self, query: Query, owner: SocketOwner) -> ProcessInfo | None:
        try:
            info = self.lookup.find_later(
                query.transport, query.server, query.client, owner, LATER_BUDGET_S
            )
        except Exception as exc:
            self.faults.unexpected("finding the process of a query after its answer", exc)
            return None
        if info is not None:
            if self.tools is not None and info.tool is None:
                info = self.tools.tag(info)
            if len(self._known) >= REMEMBERED_SOCKETS:
                self._known.clear()
            self._known[(query.transport, owner.inode, owner.cookie)] = info
        return info

    @staticmethod
    def _found_later(queries: list[Query], owner: SocketOwner, info: ProcessInfo | None) -> None:
        for query in queries:
            before = query.process
            if info is not None:
                query.process = info
            elif before is not None and before.note:
                note = f"{before.note}, nor in the {LATER_BUDGET_S * 1000:g} ms after"
                query.process = replace(before, uid=owner.uid, note=note)

    def same_socket(
        self, server: tuple[Any, ...], client: tuple[Any, ...], socket: tuple[int, int]
    ) -> bool:
        """True while the UDP client at `client` still holds `socket` (inode, cookie): the
        pipeline's check before it answers a repeated question without the stages."""
        try:
            return self.lookup.holds(Transport.UDP, server, client, socket)
        except Exception:
            return False

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

    def counts(self) -> dict[str, int]:
        """For `status`: searches, and the queries answered before their process was known."""
        later = self.later
        return {
            "searches": self.lookups,
            "failures": self.failures,
            "skipped_for_share": self.skipped,
            "searched_after_answer": later.searched,
            "found_after_answer": later.found,
            "not_searched_after_answer": later.dropped,
        }

    def forget(self) -> None:
        self._known.clear()


class LaterSearches:
    """Searches that go on while and after a query is answered, one socket at a time on a
    thread started on first use; a query's observers are told once its search ends. Serving
    threads call `start`, `join` and `settle`; only the thread searches. Idle, it sleeps
    unwoken."""

    def __init__(
        self,
        search: Callable[[Query, SocketOwner], ProcessInfo | None],
        found: Callable[[list[Query], SocketOwner, ProcessInfo | None], None],
        pending_max: int = LATER_PENDING,
    ) -> None:
        self._search = search
        self._found = found
        self._pending_max = pending_max
        # sockets to search for, newest last, with the queries that came from each; and the
        # one being searched for now
        self._sockets: dict[tuple[int, int], tuple[SocketOwner, list[Query]]] = {}
        self._current: tuple[tuple[int, int], list[Query]] | None = None
        # queries still searched for, and their report once they were answered
        self._reports: dict[Query, Report | None] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.searched = 0
        self.found = 0
        self.dropped = 0  # not searched: too many searches waiting

    def start(self, query: Query, owner: SocketOwner) -> bool:
        with self._lock:
            if self._stopping or len(self._reports) >= self._pending_max:
                self.dropped += 1
                return False
            if not self._join(query, owner):
                self._sockets[owner.identity] = (owner, [query])
                self._reports[query] = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="attribution", daemon=True)
                self._thread.start()
        self._wake.set()
        return True

    def join(self, query: Query, owner: SocketOwner) -> bool:
        """True when `owner`'s socket is searched for already; `query` then waits for that."""
        with self._lock:
            return not self._stopping and self._join(query, owner)

    def _join(self, query: Query, owner: SocketOwner) -> bool:
        waiting = self._sockets.get(owner.identity)
        if waiting is not None:
            queries = waiting[1]
        elif self._current is not None and self._current[0] == owner.identity:
            queries = self._current[1]
        else:
            return False
        queries.append(query)
        self._reports[query] = None
        return True

    def settle(self, query: Query, report: Report) -> bool:
        """True when `query`'s search still runs: `report(query, 1)` is called when it ends."""
        with self._lock:
            if query not in self._reports:
                return False
            self._reports[query] = report
            return True

    def stop(self, timeout_s: float = 1.0) -> None:
        """Ends the thread; what still waits is reported as it is."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while True:
                with self._lock:
                    if not self._sockets:
                        break
                    # newest first: its program is the likeliest to be still there
                    identity = next(reversed(self._sockets))
                    owner, queries = self._sockets.pop(identity)
                    self._current = identity, queries
                    stopping = self._stopping
                waited_s = time.monotonic() - queries[0].received_at
                late = stopping or waited_s > LATER_WAIT_S  # its program has surely gone
                info = None if late else self._search(queries[0], owner)
                with self._lock:
                    self._current = None
                    queries = list(queries)
                self.searched += 1
                self.found += info is not None
                self._found(queries, owner, info)
                with self._lock:
                    reports = [(query, self._reports.pop(query, None)) for query in queries]
                for query, report in reports:
                    if report is None:
                        continue
                    try:
                        report(query, 1)
                    except Exception:
                        log.exception("reporting a query after its late search")
            if self._stopping:
                return
