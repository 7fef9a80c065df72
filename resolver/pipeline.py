"""The chain of stages a query goes through, and the order they run in.

A stage answers synchronously on the thread that read the packet, or passes: blocked and
cached answers never touch the event loop. Only a query that no stage answered goes on to
forwarding, which is asynchronous. Measured on this project's benchmark, an asyncio datagram
handler per packet served about a quarter of the queries a plain socket loop did.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

from aidns.resolver.faults import Faults
from aidns.resolver.query import Action, Decision, ProcessInfo, Query, Rcode, Transport
from aidns.resolver.replies import reply


class Stage(Protocol):
    """Answers a query by setting `response` and `decision` and returning True, or passes.

    A stage whose answer depends on who asks sets `per_client`; one whose answer holds for
    every identical question for a while says so in `query.reusable_until`. A per-client stage
    whose verdict for one client socket holds only for a while lowers
    `query.client_reusable_until`. A stage that can answer a remembered question again
    cheaply once its answer's time is up (the cache, whose TTLs count down) sets `renews`.
    """

    name: ClassVar[str]
    per_client: ClassVar[bool]

    def answer(self, query: Query) -> bool: ...


class FinalStage(Protocol):
    """The stage that always answers, given time: forwarding."""

    name: ClassVar[str]

    async def resolve(self, query: Query) -> None: ...


Observer = Callable[[Query, int], None]
"""Told of each finished query, with how many identical ones it stands for."""

Settle = Callable[[Query, Observer], bool]
"""Takes a query whose process is still being searched for (`query.process_pending`), and
tells `report(query, 1)` once the search ends; False when it could not take it."""

SameSocket = Callable[[tuple[Any, ...], tuple[Any, ...], tuple[int, int]], bool]
"""True while the UDP client (server, client) still holds the socket (inode, cookie)."""


class Stats:
    """Counts since start, by verdict, kept by the pipeline itself; read by `aidns status`."""

    def __init__(self) -> None:
        self.by_action: Counter[Action] = Counter()
        self.lock = threading.Lock()

    @property
    def queries(self) -> int:
        return sum(self.by_action.values())


class Activity:
    """Tells the one waiter that armed it, once, that the server did something since: serving
    threads call `note`, which costs a flag check until the waiter arms it again."""

    __slots__ = ("armed", "wake")

    def __init__(self) -> None:
        self.armed = False
        self.wake: Callable[[], None] = _nothing  # called from the thread that noted

    def arm(self) -> None:
        self.armed = True

    def note(self) -> None:
        if self.armed:
            self.armed = False
            self.wake()


def _nothing() -> None:
    pass


_UDP = Transport.UDP  # a module global: an enum member read off its class costs 0.1 us
MIN_MEMO_ENTRIES = 10000
MEMO_ENTRIES_PER_CACHE_ENTRY = 1.0  # the same bound as the cache: the memo also holds blocked names
MEMO_SCAN = 64  # entries the eviction hand passes over at most before it evicts one anyway
REPEAT_ENTRIES = 20000
REPEATS_PER_QUESTION = 64
REPEAT_GRACE_S = 1.0  # a repeat is counted for this long after it stops matching
REPEAT_HOLD_S = 1.0  # a socket's repeats are answered from its first reply for this long at most


def memo_entries(cache_size: int) -> int:
    """How many questions the memo remembers, for a cache of `cache_size` answers."""
    return max(MIN_MEMO_ENTRIES, int(cache_size * MEMO_ENTRIES_PER_CACHE_ENTRY))


class _Memo:
    """An answer that holds for every client until `until`, as long as the rules are those of
    `generation`, and the clients seen repeating it. `renewer` answers it again once `until`
    has passed; `used` is the eviction hand's mark (CLOCK): replayed since it last passed."""

    __slots__ = ("generation", "query", "renewer", "repeats", "response_after_id", "until", "used")

    def __init__(
        self,
        query: Query,
        response_after_id: bytes,
        until: float,
        generation: int,
        renewer: Stage | None,
    ) -> None:
        self.query = query
        self.response_after_id = response_after_id
        self.until = until
        self.generation = generation
        self.renewer = renewer
        self.used = False
        self.repeats: dict[tuple[Any, ...], _Repeat] | None = None


class _Repeat:
    """One client socket asking one question again: answered and counted, nothing more.

    Only the serving thread raises `count`; only `flush_repeats` moves `reported`.
    """

    __slots__ = ("count", "query", "reported", "response_after_id", "socket", "until")

    def __init__(self, query: Query, response_after_id: bytes, until: float) -> None:
        self.query = query
        self.response_after_id = response_after_id
        self.until = until
        self.socket = query.client_socket  # None when no stage said which socket asked
        self.count = 0
        self.reported = 0


class Pipeline:
    """Runs the synchronous stages in order, then the final one; tells observers the outcome.

    An answer that holds for a while is remembered by the query's bytes after the ID, so an
    identical packet skips parsing and matching: only the per-client stages run again. When
    those said their verdict holds for that client socket a while longer, a third identical
    packet from it is only answered and counted; `flush_repeats` reports the counts. When the
    stages said which socket asked (`query.client_socket`), the counts are reported as that
    socket's only when `same_socket` says, at the flush, that the client's address and port
    still belong to it; otherwise as from an unknown process, and the repeat ends. (The
    answer itself is the same for every socket at that address unless process rules are in
    effect, and then the process rules stage allows no repeats.)
    A query answered while its process is still being searched for is handed to `settle`,
    which tells the observers once the search ends.

    The memo holds `max_entries` questions and evicts by CLOCK: a question replayed since the
    hand last passed it gets a second chance, so questions asked once (a stream of new blocked
    names) go before those asked again, and a working set a little over the bound loses only
    its overflow. A cached answer whose second is up is rendered again by the cache, unparsed.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        final: FinalStage,
        observers: Sequence[Observer] = (),
        faults: Faults | None = None,
        same_socket: SameSocket | None = None,
        settle: Settle | None = None,
        max_entries: int = MIN_MEMO_ENTRIES,
    ):
        self.stages = tuple(stages)
        self.per_client_stages = tuple(stage for stage in stages if stage.per_client)
        self._renewers = tuple(stage for stage in stages if getattr(stage, "renews", False))
        self.final = final
        self.observers = list(observers)
        self.same_socket = same_socket
        self.settle = settle
        self.stats = Stats()
        self.faults = faults or Faults()
        self.max_entries = max_entries
        self._memo: dict[bytes, _Memo] = {}
        self._ring: list[bytes] = []  # the memo's keys, in the order the eviction hand visits
        self._hand = 0
        self._memo_lock = threading.Lock()  # serving threads add; hits only read and mark
        self._repeats: list[_Repeat] = []
        self._repeats_lock = threading.Lock()
        self.repeats_started: Callable[[], None] = _nothing  # told, from a serving thread
        self.activity = Activity()
        self.generation = 0  # of the rules: a remembered answer holds only under its own
        self._forget_lock = threading.Lock()  # forget runs on the reload thread and the loop

    def answer_now(self, query: Query) -> bytes | None:
        """The response if a stage could answer without waiting, else None: call `answer_later`."""
        generation = self.generation  # read before any stage reads the rules
        for stage in self.stages:
            if stage.answer(query):
                response = query.response
                if query.reusable_until > query.received_at and response is not None:
                    renewer = stage if stage in self._renewers else None
                    self._remember(query, response, generation, renewer)
                self.finish(query)
                return response
        return None

    def _remember(
        self, query: Query, response: bytes, generation: int, renewer: Stage | None
    ) -> None:
        template = query.replay(b"", (), query.transport, 0.0)  # no packet, client or process
        key = query.raw[2:]
        memo = _Memo(template, response[2:], query.reusable_until, generation, renewer)
        with self._memo_lock:
            entries, ring = self._memo, self._ring
            if key not in entries:
                if len(ring) < self.max_entries:
                    ring.append(key)
                else:
                    ring[self._evict(entries, ring)] = key
            entries[key] = memo

    def _evict(self, entries: dict[bytes, _Memo], ring: list[bytes]) -> int:
        """CLOCK: the ring's slot of an entry evicted, after clearing the marks the hand
        passed (at most MEMO_SCAN, then the next one goes regardless)."""
        hand, size, generation = self._hand, len(ring), self.generation
        for _ in range(MEMO_SCAN):
            entry = entries.get(ring[hand])
            if entry is None or not entry.used or entry.generation != generation:
                break
            entry.used = False
            hand = (hand + 1) % size
        entries.pop(ring[hand], None)
        self._hand = (hand + 1) % size
        return hand

    def replay(
        self, raw: bytes, client: tuple[Any, ...], now: float, server: tuple[Any, ...] = ()
    ) -> bytes | None:
        """The answer to a UDP packet seen before, if it still holds; None means parse and ask."""
        key = raw[2:]
        memo = self._memo.get(key)
        if memo is None or memo.generation != self.generation:
            return None
        memo.used = True
        expired = memo.until <= now
        if expired:
            if memo.renewer is None:
                return None
        else:
            repeats = memo.repeats
            if repeats is not None:
                repeat = repeats.get(client)
                if repeat is not None and repeat.until > now:
                    repeat.count += 1
                    return raw[:2] + repeat.response_after_id
        query = memo.query.replay(raw, client, _UDP, now, server)
        query.client_reusable_until = math.inf if expired else memo.until
        for stage in self.per_client_stages:
            if stage.answer(query):
                if expired:
                    query.client_reusable_until = now  # no repeats on an answer that ran out
                break
        else:
            if expired:
                renewed = self._renew(memo, key, query, now)
                if renewed is None:
                    return None  # the cache let it go: parse and ask
                memo = renewed
            else:
                query.response = raw[:2] + memo.response_after_id
        self.finish(query)
        if query.client_reusable_until > now:
            self._add_repeat(memo, client, query)
        return query.response

    def _confirmed(self, repeat: _Repeat) -> bool:
        """True when the repeat's client address and port still belong to the socket that
        asked first: every packet received before now came from it, since no two sockets
        hold one address and port at once."""
        if repeat.socket is None:
            return True
        check = self.same_socket
        query = repeat.query
        return check is not None and check(query.server, query.client, repeat.socket)

    def _renew(self, memo: _Memo, key: bytes, query: Query, now: float) -> _Memo | None:
        """A remembered answer whose time is up, answered again by the stage that gave it."""
        renewer = memo.renewer
        generation = memo.generation
        if renewer is None or not renewer.answer(query) or query.response is None:
            return None
        until = query.reusable_until
        query.client_reusable_until = min(query.client_reusable_until, until)
        if until <= now:
            return memo  # answered, but not to be remembered any longer
        renewed = _Memo(memo.query, query.response[2:], until, generation, renewer)
        renewed.used = True
        if generation == self.generation:
            self._memo[key] = renewed  # replaces the entry where it stands
        return renewed

    def _add_repeat(self, memo: _Memo, client: tuple[Any, ...], query: Query) -> None:
        response = query.response
        if response is None or len(self._repeats) >= REPEAT_ENTRIES:
            return
        if memo.repeats is None or len(memo.repeats) >= REPEATS_PER_QUESTION:
            memo.repeats = {}
        until = min(query.client_reusable_until, query.received_at + REPEAT_HOLD_S)
        repeat = _Repeat(query, response[2:], until)
        with self._repeats_lock:
            first = not self._repeats
            self._repeats.append(repeat)
        memo.repeats[client] = repeat
        if first:
            self.repeats_started()

    def flush_repeats(self, now: float | None = None) -> bool:
        """Report the repeats counted since the last call to the stats and the observers;
        whether some are still kept (call again within a second or so). `repeats_started`
        is told when the first one is kept after none were."""
        now = time.monotonic() if now is None else now
        with self._repeats_lock:
            repeats, self._repeats = self._repeats, []
        kept = []
        for repeat in repeats:
            count = repeat.count  # read before the check: these were received before it
            if count > repeat.reported:
                query = repeat.query
                if not self._confirmed(repeat):
                    query = _unconfirmed(query)
                    repeat.until = min(repeat.until, now)  # its port's next packet asks anew
                self._report(query, count - repeat.reported)
                repeat.reported = count
            if repeat.until + REPEAT_GRACE_S > now:
                kept.append(repeat)
        with self._repeats_lock:
            self._repeats[:0] = kept
            return bool(self._repeats)

    def forget(self) -> None:
        """Drop remembered answers: call after any change to rules or blocking. An answer a
        serving thread decided under the old rules and remembers later is never served."""
        with self._forget_lock:
            self.generation += 1
            with self._memo_lock:
                self._memo, self._ring, self._hand = {}, [], 0

    async def answer_later(self, query: Query) -> bytes:
        try:
            await self.final.resolve(query)
        except Exception as exc:
            self.faults.unexpected(f"running the {self.final.name} stage", exc)
            query.response = None
        if query.response is None:
            query.response = reply(query, Rcode.SERVFAIL)
            query.decision = Decision(
                Action.ERROR, list_name=query.decision.list_name if query.decision else ""
            )
        self.finish(query)
        return query.response

    def finish(self, query: Query) -> None:
        """The query is answered: the observers are told now, or once its process is found
        (`settle`, within a bounded time after the answer)."""
        query.answered_at = time.monotonic()
        if query.process_pending:
            query.process_pending = False
            settle = self.settle
            if settle is not None and settle(query, self._report):
                return
        self._report(query, 1)

    def _report(self, query: Query, count: int) -> None:
        if self.activity.armed:
            self.activity.note()
        decision = query.decision
        if decision is not None:
            with self.stats.lock:
                self.stats.by_action[decision.action] += count
        for observer in self.observers:
            try:
                observer(query, count)
            except Exception as exc:
                self.faults.unexpected(f"telling {type(observer).__name__} of a query", exc)


UNCONFIRMED = ProcessInfo(None, None, note="its socket closed before its repeats were checked")


def _unconfirmed(query: Query) -> Query:
    """A copy of a repeated query whose socket has gone: who sent the repeats is not known."""
    copy = query.replay(query.raw, query.client, query.transport, query.received_at, query.server)
    copy.response = query.response
    copy.upstream = query.upstream
    copy.answered_at = query.answered_at
    copy.process = UNCONFIRMED
    return copy


def default_stages(
    access: Stage,
    attribution: Stage,
    special: Stage,
    process_rules: Stage,
    blocking: Stage,
    caching: Stage,
    forwarding: FinalStage,
) -> tuple[list[Stage], FinalStage]:
    return (
        [
            access,  # first: a client we do not serve gets REFUSED before any work
            attribution,  # before any stage that answers: the client's socket closes once answered
            special,  # canaries that keep clients on aidns, whatever the lists or a pause say
            process_rules,  # needs the process; per client, so it runs for repeated questions too
            blocking,  # before caching: a new block rule takes effect on cached names at once
            caching,  # stores only what forwarding brought back
        ],
        forwarding,  # last, and the only stage that waits
    )
