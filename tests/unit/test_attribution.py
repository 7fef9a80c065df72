"""The attribution stage: lookups take at most their share of the serving thread's time."""

from __future__ import annotations

import time

import pytest

from aidns.resolver.query import ProcessInfo, Query, Transport
from aidns.resolver.stages.attribution import (
    LOOKUP_CREDIT_S,
    LOOKUP_SHARE,
    SKIPPED,
    AttributionStage,
)

from .helpers import make_wire

LOOKUP_S = 0.005


class SlowLookup:
    """Finds every process, taking LOOKUP_S each time."""

    def __init__(self) -> None:
        self.calls = 0

    def find(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        budget_s: float = 0.002,
    ) -> ProcessInfo | None:
        self.calls += 1
        time.sleep(LOOKUP_S)
        return ProcessInfo(1234, "client")


def query_from(port: int, at: float) -> Query:
    return Query(make_wire("who.test"), ("127.0.0.1", port), Transport.UDP, at)


def test_a_burst_of_new_clients_is_answered_unattributed_beyond_the_lookup_share() -> None:
    lookup = SlowLookup()
    stage = AttributionStage(lookup)
    burst = [query_from(10000 + i, 50.0) for i in range(100)]  # all at one instant
    for query in burst:
        assert stage.answer(query) is False
    looked_up = [q for q in burst if q.process is not SKIPPED]
    assert len(looked_up) == lookup.calls <= LOOKUP_CREDIT_S / LOOKUP_S + 1
    assert stage.skipped == len(burst) - lookup.calls
    # the share comes back with time: a skipped socket is looked up on its next query
    later = query_from(10099, 50.0 + 10 * LOOKUP_S / LOOKUP_SHARE)
    stage.answer(later)
    assert later.process == ProcessInfo(1234, "client")


def test_a_client_seen_before_costs_no_lookup_and_is_never_skipped() -> None:
    lookup = SlowLookup()
    stage = AttributionStage(lookup)
    first = query_from(20000, 10.0)
    stage.answer(first)
    for index in range(50):
        again = query_from(20000, 10.0 + index * 0.001)
        stage.answer(again)
        assert again.process == first.process
    assert lookup.calls == 1 and stage.skipped == 0


class BrokenLookup:
    def find(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        budget_s: float = 0.002,
    ) -> ProcessInfo | None:
        raise RuntimeError("the socket table moved")


def test_a_failing_lookup_is_counted_once_per_kind_and_the_query_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stage = AttributionStage(BrokenLookup())
    for index in range(20):
        query = query_from(30000 + index, 5.0 + index)
        assert stage.answer(query) is False and query.process is None
    assert stage.faults.counts() == {"RuntimeError while finding the process of a query": 20}
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is None
