"""The attribution stage: kept per socket, never per address and port; lookups take their share."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from aidns.resolver.pipeline import Pipeline
from aidns.resolver.procinfo.common import (
    DEFAULT_BUDGET_S,
    SOCKET_FALLBACK_S,
    SocketOwner,
    out_of_time,
)
from aidns.resolver.query import Action, Decision, ProcessInfo, Query, Transport
from aidns.resolver.stages.attribution import (
    LOOKUP_CREDIT_S,
    LOOKUP_SHARE,
    SKIPPED,
    AttributionStage,
)

from .helpers import make_wire

LOOKUP_S = 0.005


class SlowLookup:
    """Every port holds socket inode 1000 + port, of process 1234 unless `held` says otherwise;
    finding the process takes LOOKUP_S."""

    identifies_sockets = True

    def __init__(self) -> None:
        self.calls = 0
        self.held: dict[int, tuple[int, int]] = {}  # port -> (inode, pid)

    def _held(self, port: int) -> tuple[int, int]:
        return self.held.get(port, (1000 + port, 1234))

    def client_socket(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        fallback_s: float = SOCKET_FALLBACK_S,
    ) -> SocketOwner | None:
        return SocketOwner(0, self._held(client[1])[0])

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
        self.calls += 1
        time.sleep(LOOKUP_S)
        return ProcessInfo(self._held(client[1])[1], "client")


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


def test_a_socket_seen_before_costs_no_lookup_and_is_never_skipped() -> None:
    lookup = SlowLookup()
    stage = AttributionStage(lookup)
    first = query_from(20000, 10.0)
    stage.answer(first)
    for index in range(50):
        again = query_from(20000, 10.0 + index * 0.001)
        stage.answer(again)
        assert again.process == first.process and again.client_socket == (21000, 0)
    assert lookup.calls == 1 and stage.skipped == 0


def test_another_socket_on_the_same_address_and_port_is_looked_up_afresh() -> None:
    lookup = SlowLookup()
    stage = AttributionStage(lookup)
    lookup.held[20000] = (555, 100)
    first = query_from(20000, 10.0)
    stage.answer(first)
    assert first.process is not None and first.process.pid == 100
    # within the same millisecond, another program's new socket gets that port
    lookup.held[20000] = (556, 200)
    second = query_from(20000, 10.001)
    stage.answer(second)
    assert second.process is not None and second.process.pid == 200
    assert lookup.calls == 2


class BrokenLookup(SlowLookup):
    def find(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        budget_s: float = DEFAULT_BUDGET_S,
        owner: SocketOwner | None = None,
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


# --- real programs, one after another on one port ---------------------------------------------

HOLDER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[2])))
s.sendto(b"q", ("127.0.0.1", int(sys.argv[1])))
print(s.getsockname()[1], flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def server() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(5)
        yield udp


def ask_from_a_new_program(server: socket.socket, port: int) -> tuple[subprocess.Popen[str], Query]:
    """A program that sends from `port` (0: any) and holds its socket until told to go."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(server.getsockname()[1]), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    child.stdout.readline()
    _, client = server.recvfrom(16)
    query = Query(make_wire("who.test"), client, Transport.UDP, time.monotonic())
    query.server = server.getsockname()
    return child, query


def done(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    child.wait(10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket table")
def test_a_program_that_takes_over_a_port_is_never_blamed_for_the_last_ones_queries(
    server: socket.socket,
) -> None:
    from aidns.resolver.procinfo.linux import LinuxProcessLookup

    stage = AttributionStage(LinuxProcessLookup(), budget_s=1.0)
    first, asked = ask_from_a_new_program(server, 0)
    stage.answer(asked)
    port = asked.client[1]
    assert asked.process is not None and asked.process.pid == first.pid
    done(first)
    second, again = ask_from_a_new_program(server, port)  # the same address and port at once
    assert again.client == asked.client
    stage.answer(again)
    assert again.client_socket is not None
    assert stage.same_socket(server.getsockname(), again.client, again.client_socket)
    done(second)
    assert again.process is not None and again.process.pid == second.pid
    assert again.client_socket != asked.client_socket
    assert not stage.same_socket(server.getsockname(), asked.client, asked.client_socket or (0, 0))


# --- a search that runs out of budget goes on after the answer --------------------------------


class LateLookup(SlowLookup):
    """Never finds a process within the budget; finds it afterwards once `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.later_calls = 0

    def find(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        budget_s: float = DEFAULT_BUDGET_S,
        owner: SocketOwner | None = None,
    ) -> ProcessInfo | None:
        return ProcessInfo(None, None, uid=0, note=out_of_time(budget_s))

    def find_later(
        self,
        transport: Transport,
        server: tuple[str, int],
        client: tuple[str, int],
        owner: SocketOwner,
        budget_s: float,
    ) -> ProcessInfo | None:
        self.later_calls += 1
        self.release.wait(5)
        return ProcessInfo(self._held(client[1])[1], "late")


def test_the_log_hears_of_a_query_once_its_late_search_ends_and_the_answer_never_waits() -> None:
    lookup = LateLookup()
    stage = AttributionStage(lookup)
    told: list[tuple[ProcessInfo | None, int]] = []
    observers = [lambda q, n: told.append((q.process, n))]
    pipeline = Pipeline([stage, BlocksEverything()], NeverForwards(), observers)
    pipeline.settle = stage.settle
    blocked = pipeline_query(20000)
    assert pipeline.answer_now(blocked) is not None  # answered while the search goes on
    assert told == []
    again = pipeline_query(20000)  # the same socket asks again: it joins that search
    assert pipeline.answer_now(again) is not None
    lookup.release.set()
    deadline = time.monotonic() + 5
    while len(told) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stage.later.stop()
    assert [(p.pid if p else None, n) for p, n in told] == [(1234, 1), (1234, 1)]
    assert lookup.later_calls == 1 and stage.later.found == 1
    third = pipeline_query(20000)
    stage.answer(third)  # kept for that socket now
    assert third.process is not None and third.process.pid == 1234 and not third.process_pending


def test_a_late_search_that_finds_nothing_says_so_and_still_reports() -> None:
    class Gone(LateLookup):
        def find_later(self, *args: Any, **options: Any) -> ProcessInfo | None:
            return None

    stage = AttributionStage(Gone())
    told: list[ProcessInfo | None] = []
    observers = [lambda q, n: told.append(q.process)]
    pipeline = Pipeline([stage, BlocksEverything()], NeverForwards(), observers)
    pipeline.settle = stage.settle
    pipeline.answer_now(pipeline_query(20001))
    deadline = time.monotonic() + 5
    while not told and time.monotonic() < deadline:
        time.sleep(0.01)
    stage.later.stop()
    (process,) = told
    assert process is not None and process.pid is None and process.uid == 0
    assert process.note == "process not found within 2 ms, nor in the 50 ms after"


class BlocksEverything:
    name: ClassVar[str] = "blocks"
    per_client: ClassVar[bool] = False

    def answer(self, query: Query) -> bool:
        query.decision = Decision(Action.BLOCKED)
        query.response = b"\x00\x00answer"
        return True


class NeverForwards:
    name: ClassVar[str] = "never"

    async def resolve(self, query: Query) -> None:
        raise AssertionError("every query is answered at once here")


def pipeline_query(port: int) -> Query:
    query = query_from(port, time.monotonic())
    query.server = ("127.0.0.1", 53)
    return query
