"""The binary records from the server to the log writer: what goes in comes out, in any chunking."""

from __future__ import annotations

import random

import pytest

from aidns.resolver.query import Action, Decision, ProcessInfo, Query, Transport
from aidns.resolver.querylog.recorder import QueryRecorder
from aidns.resolver.querylog.records import (
    MAX_DEFINITIONS,
    DecodedQuery,
    FormatError,
    RecordDecoder,
)
from tests.unit.helpers import make_wire

OLLAMA = ProcessInfo(41, "ollama", "/usr/bin/ollama", "ollama serve", 1000, "ollama", "ann")
CURL = ProcessInfo(42, "curl", None, None, 0, None, "root", relay=True, note="relay: resolved")
BLOCKED = Decision(Action.BLOCKED, "sentry.io", "telemetry")


def finished(
    name: str,
    client: tuple[object, ...] = ("127.0.0.1", 40000),
    transport: Transport = Transport.UDP,
    process: ProcessInfo | None = None,
    decision: Decision | None = BLOCKED,
    upstream: str | None = None,
    answered: bool = True,
) -> Query:
    query = Query(make_wire(name), client, transport, 100.0)
    query.process = process
    query.decision = decision
    query.upstream = upstream
    query.answered_at = 100.25
    query.response = query.raw[:2] + b"\x81\x80" + query.raw[4:] if answered else None
    return query


def decode_in_chunks(data: bytes, seed: int = 7) -> list[DecodedQuery]:
    chunks = random.Random(seed)
    decoder = RecordDecoder()
    decoded: list[DecodedQuery] = []
    pos = 0
    while pos < len(data):
        size = chunks.randint(1, 40)
        decoded += decoder.feed(data[pos : pos + size])
        pos += size
    return decoded


def test_every_field_survives_the_trip_in_chunks_of_any_size() -> None:
    recorder = QueryRecorder()
    sent = [
        finished("a.example", process=OLLAMA),
        finished("b.example", ("::1", 5353, 0, 0), Transport.TCP, CURL, upstream="9.9.9.9:53"),
        finished("c.example", process=OLLAMA, decision=None, answered=False),
        finished("a.example", process=OLLAMA),
    ]
    for count, query in enumerate(sent, start=1):
        recorder(query, count)
    data, count = recorder.take()
    assert count == 1 + 2 + 3 + 4
    decoded = decode_in_chunks(data)
    assert [d.qname for d in decoded] == [q.qname for q in sent]
    assert [d.count for d in decoded] == [1, 2, 3, 4]
    assert [d.address for d in decoded] == ["127.0.0.1", "::1", "127.0.0.1", "127.0.0.1"]
    assert [d.port for d in decoded] == [40000, 5353, 40000, 40000]
    assert [d.transport for d in decoded] == [q.transport for q in sent]
    assert [d.process for d in decoded] == [OLLAMA, CURL, OLLAMA, OLLAMA]
    assert [d.decision for d in decoded] == [BLOCKED, BLOCKED, None, BLOCKED]
    assert [d.upstream for d in decoded] == [None, "9.9.9.9:53", None, None]
    assert [d.response for d in decoded] == [q.response for q in sent]
    assert [d.question_end for d in decoded] == [q.question_end if q.response else 0 for q in sent]
    assert all(d.latency_s == pytest.approx(0.25) for d in decoded)
    assert decoded[0].wall == pytest.approx(decoded[3].wall)


def test_definitions_are_forgotten_on_both_sides_past_the_limit() -> None:
    recorder = QueryRecorder(limit_bytes=1 << 30)
    decoder = RecordDecoder()
    processes = [ProcessInfo(pid, f"p{pid}") for pid in range(MAX_DEFINITIONS * 2 + 10)]
    decoded: list[DecodedQuery] = []
    for process in processes:
        recorder(finished(f"n{process.pid}.example", process=process))
        data, _count = recorder.take()
        decoded += decoder.feed(data)
        assert len(decoder._definitions) <= MAX_DEFINITIONS + 4
    assert [d.process for d in decoded] == processes


def test_a_new_reader_after_start_over_knows_every_definition_in_force() -> None:
    recorder = QueryRecorder()
    recorder(finished("a.example", process=OLLAMA, upstream="127.0.0.1:53"))
    recorder.take()  # went to a writer that is gone now
    recorder.start_over()
    recorder(finished("b.example", process=OLLAMA, upstream="127.0.0.1:53"))
    data, count = recorder.take()
    (decoded,) = RecordDecoder().feed(data)
    assert count == 1
    assert (decoded.process, decoded.decision, decoded.upstream) == (
        OLLAMA,
        BLOCKED,
        "127.0.0.1:53",
    )


def test_a_process_object_that_is_gone_is_never_confused_with_its_successor() -> None:
    """Processes are known by identity; a new object with the same id() is defined anew."""
    recorder = QueryRecorder()
    recorder(finished("a.example", process=ProcessInfo(1, "first")))
    recorder(finished("b.example", process=ProcessInfo(2, "second")))
    data, _count = recorder.take()
    assert [d.process.name for d in RecordDecoder().feed(data) if d.process] == ["first", "second"]


def test_a_full_buffer_counts_drops_and_never_raises() -> None:
    recorder = QueryRecorder(limit_bytes=1)
    recorder(finished("a.example"), 3)  # the first record goes in: the buffer was under
    recorder(finished("b.example"), 5)
    recorder(finished("c.example"))
    data, count = recorder.take()
    assert (count, recorder.dropped) == (3, 6)
    assert [d.qname for d in RecordDecoder().feed(data)] == [b"a.example"]


def test_a_stream_that_is_not_records_is_refused_with_where() -> None:
    with pytest.raises(FormatError, match="unknown record kind 255 at byte 0"):
        list(RecordDecoder().feed(b"\xff\x00\x00"))
