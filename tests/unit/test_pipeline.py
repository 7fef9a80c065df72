"""The pipeline's remembered answers and repeats, with the real stages in their real order."""

from __future__ import annotations

import math
import random
import time
from typing import Any, ClassVar

from aidns.resolver.config import CacheConfig, Protections
from aidns.resolver.endpoints import parse_upstream
from aidns.resolver.pipeline import Pipeline, default_stages
from aidns.resolver.procinfo.common import (
    DEFAULT_BUDGET_S,
    SOCKET_FALLBACK_S,
    NullProcessLookup,
    ProcessLookup,
    SocketOwner,
)
from aidns.resolver.query import Action, ProcessInfo, Query, Transport
from aidns.resolver.replies import BlockResponse
from aidns.resolver.rules.active import ActiveRules, RuleHolder
from aidns.resolver.rules.lists import DomainList, ListAction, Rule
from aidns.resolver.rules.matcher import DomainMatcher
from aidns.resolver.rules.user import ProcessRules
from aidns.resolver.stages.access import AccessStage
from aidns.resolver.stages.attribution import AttributionStage
from aidns.resolver.stages.blocking import BlockingStage
from aidns.resolver.stages.caching import AnswerCache, CachingStage
from aidns.resolver.stages.forwarding import ForwardingStage
from aidns.resolver.stages.special import SpecialNamesStage
from aidns.resolver.upstream.pool import UpstreamPool

from .helpers import make_wire

CLIENT = ("127.0.0.1", 40000)
OTHER_PORT = ("127.0.0.1", 40001)


class CountingStage:
    """A per-client stage that passes, counting how often it ran."""

    name: ClassVar[str] = "counting"
    per_client: ClassVar[bool] = True

    def __init__(self) -> None:
        self.runs = 0

    def answer(self, query: Query) -> bool:
        self.runs += 1
        return False


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Action | None, int, float]] = []

    def __call__(self, query: Query, count: int) -> None:
        action = query.decision.action if query.decision else None
        self.seen.append((query.name, action, count, query.answered_at - query.received_at))

    def total(self, name: str) -> int:
        return sum(count for seen_name, _, count, _ in self.seen if seen_name == name)


class PortSockets:
    """A socket table in miniature: which socket (inode) and process hold each client port."""

    identifies_sockets = True

    def __init__(self) -> None:
        self.held: dict[int, tuple[int, int]] = {}  # port -> (inode, pid)
        self.finds = 0

    def client_socket(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        fallback_s: float = SOCKET_FALLBACK_S,
    ) -> SocketOwner | None:
        held = self.held.get(client[1])
        return None if held is None else SocketOwner(1000, held[0], cookie=held[0] * 7)

    def holds(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        identity: tuple[int, int],
    ) -> bool:
        owner = self.client_socket(transport, server, client)
        return owner is not None and owner.identity == identity

    def find(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        budget_s: float = DEFAULT_BUDGET_S,
        owner: SocketOwner | None = None,
    ) -> ProcessInfo | None:
        self.finds += 1
        inode, pid = self.held[client[1]]
        assert owner is not None and owner.inode == inode
        return ProcessInfo(pid, f"tool{pid}", uid=1000)


def build(
    blocked: str = "sentry.io", lookup: ProcessLookup | None = None
) -> tuple[Pipeline, CountingStage, AttributionStage, BlockingStage, Recorder]:
    rules = DomainList("test", ListAction.BLOCK, "test")
    rules.rules.append(Rule(blocked, ListAction.BLOCK, "test"))
    blocking = BlockingStage(
        RuleHolder(ActiveRules(DomainMatcher([rules]), ProcessRules(), BlockResponse()))
    )
    attribution = AttributionStage(lookup or NullProcessLookup())
    counting = CountingStage()
    cache = AnswerCache(CacheConfig())
    pool = UpstreamPool([parse_upstream("127.0.0.1:9")], timeout_s=0.1)
    stages, final = default_stages(
        access=AccessStage(),
        attribution=attribution,
        special=SpecialNamesStage(Protections()),
        process_rules=counting,
        blocking=blocking,
        caching=CachingStage(cache),
        forwarding=ForwardingStage(pool, cache),
    )
    recorder = Recorder()
    pipeline = Pipeline(stages, final, [recorder], same_socket=attribution.same_socket)
    return pipeline, counting, attribution, blocking, recorder


def ask(
    pipeline: Pipeline, wire: bytes, query_id: int, now: float, client: Any = CLIENT
) -> bytes | None:
    """What the UDP thread does: replay, else parse and answer now."""
    raw = query_id.to_bytes(2, "big") + wire[2:]
    response = pipeline.replay(raw, client, now)
    if response is None:
        response = pipeline.answer_now(Query(raw, client, Transport.UDP, now))
    return response


def test_a_repeat_is_answered_with_its_own_id_and_counted_once_flushed() -> None:
    pipeline, counting, attribution, _, recorder = build()
    wire = make_wire("o1.ingest.sentry.io")
    start = time.monotonic()
    responses = [ask(pipeline, wire, query_id, start + query_id / 1e5) for query_id in range(50)]
    assert all(r is not None and r[:2] == i.to_bytes(2, "big") for i, r in enumerate(responses))
    assert len({r[2:] for r in responses if r}) == 1
    # parsed once, replayed through the per-client stages once, then only counted
    assert counting.runs == 2
    assert attribution.lookups == 2  # a lookup that cannot name sockets keeps nothing
    assert recorder.total("o1.ingest.sentry.io") == 2
    assert pipeline.stats.queries == 2
    pipeline.flush_repeats(now=start + 0.1)
    assert recorder.total("o1.ingest.sentry.io") == 50
    assert pipeline.stats.by_action[Action.BLOCKED] == 50
    assert recorder.seen[-1][1:3] == (Action.BLOCKED, 48)
    assert 0 <= recorder.seen[-1][3] < 0.5  # the latency of the answer, not the age of the count
    pipeline.flush_repeats(now=start + 0.2)
    assert pipeline.stats.queries == 50  # nothing counted twice


def test_another_client_port_runs_the_per_client_stages_again() -> None:
    pipeline, counting, attribution, _, _ = build()
    wire = make_wire("sentry.io")
    for query_id in range(3):
        ask(pipeline, wire, query_id, now=1.0)
    assert counting.runs == 2
    ask(pipeline, wire, 7, now=1.0, client=OTHER_PORT)
    assert counting.runs == 3
    assert attribution.lookups == 3


def test_repeats_are_logged_as_their_sockets_only_while_it_holds_the_port() -> None:
    sockets = PortSockets()
    pipeline, counting, _, _, _ = build(lookup=sockets)
    told: list[tuple[int | None, int]] = []
    pipeline.observers.append(lambda q, n: told.append((q.process.pid if q.process else -1, n)))
    wire = make_wire("sentry.io")
    sockets.held[CLIENT[1]] = (9001, 100)
    for query_id in range(4):
        ask(pipeline, wire, query_id, now=5.0)
    assert (counting.runs, sockets.finds) == (2, 1)  # parsed, replayed, then two repeats
    pipeline.flush_repeats(now=5.0)  # still its socket: the repeats are its own
    assert told == [(100, 1), (100, 1), (100, 2)]
    ask(pipeline, wire, 4, now=5.0005)
    # the program exits; within the same millisecond another one gets its port and asks too
    sockets.held[CLIENT[1]] = (9002, 200)
    for query_id in range(5, 8):
        ask(pipeline, wire, query_id, now=5.001)
    pipeline.flush_repeats(now=5.002)  # who sent which of those four is not known: nobody
    assert told[3:] == [(None, 4)]
    for query_id in range(8, 11):  # the repeat ended: the port's next packet is looked up
        ask(pipeline, wire, query_id, now=5.003)
    assert (counting.runs, sockets.finds) == (3, 2)
    pipeline.flush_repeats(now=math.inf)
    assert told[4:] == [(200, 1), (200, 2)]
    assert sum(n for _, n in told) == 11


def test_forget_ends_repeats_at_once_and_keeps_their_counts() -> None:
    pipeline, _, _, blocking, recorder = build()
    wire = make_wire("sentry.io")
    for query_id in range(4):
        ask(pipeline, wire, query_id, now=1.0)
    blocking.holder.replace(matcher=DomainMatcher([]))
    pipeline.forget()
    # no longer blocked: the next one goes to forwarding instead of repeating the sinkhole
    assert pipeline.replay(b"\x00\x09" + wire[2:], CLIENT, 1.0) is None
    pipeline.flush_repeats(now=1.0)
    assert recorder.total("sentry.io") == 4


def test_a_flush_while_repeats_arrive_loses_none() -> None:
    pipeline, _, _, _, recorder = build()
    wire = make_wire("sentry.io")
    for query_id in range(1000):
        ask(pipeline, wire, query_id, now=1.0)
        if query_id % 7 == 0:
            pipeline.flush_repeats(now=1.0)
    pipeline.flush_repeats(now=math.inf)
    assert recorder.total("sentry.io") == 1000
    assert pipeline.stats.queries == 1000


def test_a_stage_that_answers_for_one_client_is_repeated_too() -> None:
    pipeline, _, _, _, recorder = build()
    wire = make_wire("sentry.io")
    ask(pipeline, wire, 1, now=1.0)
    stranger = ("192.0.2.7", 5353)
    answers = [ask(pipeline, wire, query_id, now=1.0, client=stranger) for query_id in range(5)]
    assert all(a is not None and a[3] & 0xF == 5 for a in answers)  # only loopback is served
    pipeline.flush_repeats(now=math.inf)
    assert [s[1:3] for s in recorder.seen if s[1] is Action.REFUSED] == [
        (Action.REFUSED, 1),
        (Action.REFUSED, 4),
    ]


def test_an_answer_decided_under_old_rules_is_never_replayed_under_new_ones() -> None:
    pipeline, _, _, blocking, _ = build()
    wire = make_wire("sentry.io")
    decide = blocking.answer

    def rules_change_just_after_deciding(query: Query) -> bool:
        answered = decide(query)
        # the reload thread swaps the rules before this serving thread remembers its answer
        blocking.holder.replace(matcher=DomainMatcher([]))
        pipeline.forget()
        return answered

    blocking.answer = rules_change_just_after_deciding  # type: ignore[method-assign]
    assert ask(pipeline, wire, 1, now=1.0) is not None  # blocked, under the old rules
    assert pipeline.replay(b"\x00\x02" + wire[2:], CLIENT, 1.0) is None


def test_a_question_asked_again_outlives_a_stream_of_new_ones() -> None:
    pipeline, _, _, _, _ = build()
    pipeline.max_entries = 100
    hot = make_wire("sentry.io")
    ask(pipeline, hot, 1, now=1.0)
    for index in range(2000):  # new blocked names, each asked once
        ask(pipeline, make_wire(f"n{index}.sentry.io"), 2, now=1.0)
        if index % 20 == 0:
            client = ("127.0.0.1", 50000 + index)  # a new socket: no repeat, a real replay
            assert pipeline.replay(b"\x00\x03" + hot[2:], client, 1.0) is not None
    assert len(pipeline._memo) == 100


def test_a_working_set_a_little_over_the_memo_loses_only_its_overflow() -> None:
    pipeline, _, _, _, _ = build()
    pipeline.max_entries = 100
    wires = [make_wire(f"n{index}.sentry.io") for index in range(120)]
    rng = random.Random(5)
    for wire in wires:
        ask(pipeline, wire, 1, now=1.0)
    replayed = 0
    for turn in range(3000):
        raw = b"\x00\x04" + rng.choice(wires)[2:]
        client = ("127.0.0.1", 20000 + turn)
        if pipeline.replay(raw, client, 1.0) is not None:
            replayed += 1
        else:
            pipeline.answer_now(Query(raw, client, Transport.UDP, 1.0))
    assert replayed / 3000 > 0.7  # 100/120 at best; two generations of 50 managed about half


def test_a_cached_answer_whose_second_is_up_is_rendered_again_without_parsing() -> None:
    pipeline, counting, _, _, _ = build()
    caching = next(stage for stage in pipeline.stages if isinstance(stage, CachingStage))
    wire = make_wire("example.org")
    query = Query(wire, CLIENT, Transport.UDP, 0.0)
    answer = wire[:2] + b"\x81\x80" + wire[4:6] + b"\x00\x01\x00\x00\x00\x00"
    answer += wire[12 : query.question_end] + b"\xc0\x0c\x00\x01\x00\x01"
    answer += (300).to_bytes(4, "big") + b"\x00\x04\xc0\x00\x02\x01"
    caching.cache.store(query, answer)
    now = time.monotonic()
    first = ask(pipeline, wire, 1, now)
    assert first is not None and first[-10:-6] == (300).to_bytes(4, "big")
    entry = caching.cache._entries[query.cache_key()]
    entry.stored_at -= 2  # two seconds later, as the cache sees it
    entry.expires_at -= 2
    pipeline._memo[wire[2:]].until = now  # and the remembered answer's second is up
    runs = counting.runs
    later = time.monotonic()
    again = pipeline.replay(b"\x00\x05" + wire[2:], OTHER_PORT, later)
    assert again is not None and again[:2] == b"\x00\x05"
    assert again[-10:-6] == (298).to_bytes(4, "big")  # the TTL counted down
    assert counting.runs == runs + 1  # the per-client stages ran; nothing was parsed
    assert pipeline._memo[wire[2:]].until > later
