"""1,000 identical queries at once, from 1,000 real sockets, while the upstream misbehaves:
all share one exchange, and every client gets its answer or SERVFAIL within the budget."""

from __future__ import annotations

import statistics
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from tests.e2e.conftest import start_aidns
from tests.helpers.dnsserver import Behaviour, FakeNameserver

from .helpers import BUDGET_S, SLACK_S, burst, final_status, stopped_log

CLIENTS = 1000
NAME = "burst.test"


@pytest.mark.parametrize(
    ("behaviour", "ttl_s", "rcode"),
    [
        (Behaviour.REFUSED, 300, dns.rcode.SERVFAIL),  # the only upstream refused: no answer
        (Behaviour.SERVFAIL, 300, dns.rcode.SERVFAIL),
        (Behaviour.ANSWER, 0, dns.rcode.NOERROR),  # TTL 0: not cached, so shared or asked again
        (Behaviour.SILENT, 300, dns.rcode.SERVFAIL),
    ],
    ids=["refused", "servfail", "ttl0", "silent"],
)
def test_every_one_of_a_thousand_identical_queries_is_answered_within_the_budget(
    tmp_path: Path, behaviour: Behaviour, ttl_s: int, rcode: int
) -> None:
    with FakeNameserver(default=behaviour, ttl_s=ttl_s, delay_s=(0.02, 0.1)) as upstream:
        server = start_aidns(tmp_path, f"--upstream={upstream.hostport}")
        try:
            queries = [dns.message.make_query(NAME, "A") for _ in range(CLIENTS)]
            replies = burst(server.port(), [q.to_wire() for q in queries], BUDGET_S + 3.0)
        finally:
            log = stopped_log(server)
    answered = [(q, r) for q, r in zip(queries, replies, strict=True) if r is not None]
    latencies = sorted(reply.latency_s for _, reply in answered)
    figures = (
        f"{len(answered)} of {CLIENTS} answered; median {statistics.median(latencies or [0]):.3f}"
        f" s, slowest {max(latencies or [0]):.3f} s; upstream asked {upstream.queries} times"
    )
    assert len(answered) == CLIENTS, figures
    assert latencies[-1] <= BUDGET_S + SLACK_S, figures
    for query, reply in answered:
        response = dns.message.from_wire(reply.wire)
        assert response.id == query.id and response.question == query.question
        assert response.rcode() == rcode
        if rcode == dns.rcode.NOERROR:
            assert [r.address for r in response.answer[0]] == [upstream.address]
    assert upstream.queries <= 10, figures  # one exchange per wave, not one per client
    assert "Traceback" not in log
    faults = final_status(server)["faults"]
    assert not [kind for kind in faults if "while" in kind], faults  # nothing unexpected
    if behaviour in (Behaviour.REFUSED, Behaviour.SILENT):  # a SERVFAIL is passed on as such
        assert faults["no upstream answered"] >= 1
        assert log.count("no upstream answered") == 1  # once per minute, not per query
