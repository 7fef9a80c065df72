"""Broken upstream answers never reach a client: each counts as that upstream's failure, so
the client gets the next upstream's answer, or SERVFAIL within the budget."""

from __future__ import annotations

import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.e2e.conftest import start_aidns
from tests.helpers.dnsserver import Behaviour, FakeNameserver

from .helpers import SLACK_S, final_status, stopped_log

BUDGET_S = 1.0
# ours, but unusable: a failure at once; not ours (over UDP maybe spoofed): waited past
DEFECTS = [Behaviour.CUT_OFF]
MISMATCHES = [
    Behaviour.NO_QUESTION,
    Behaviour.WRONG_ID,
    Behaviour.WRONG_QUESTION,
    Behaviour.QR_CLEAR,
]


def ask(port: int, name: str, tcp: bool = False) -> tuple[dns.message.Message, float]:
    query = dns.message.make_query(name, "A")
    started = time.monotonic()
    ask_over = dns.query.tcp if tcp else dns.query.udp
    response = ask_over(query, "127.0.0.1", port=port, timeout=5)
    assert response.id == query.id and response.question == query.question
    return response, time.monotonic() - started


@pytest.mark.parametrize("scheme", ["", "tcp://"], ids=["udp", "tcp"])
@pytest.mark.parametrize("behaviour", DEFECTS + MISMATCHES)
def test_a_broken_answer_from_the_only_upstream_gives_servfail(
    tmp_path: Path, behaviour: Behaviour, scheme: str
) -> None:
    with FakeNameserver(default=behaviour) as broken:
        server = start_aidns(
            tmp_path, f"--upstream={scheme}{broken.hostport}", f"--upstream-timeout={BUDGET_S}"
        )
        try:
            response, elapsed = ask(server.port(), "broken.test")
            assert broken.queries_for("broken.test") >= 1
        finally:
            log = stopped_log(server)
    assert response.rcode() == dns.rcode.SERVFAIL and response.answer == []
    waited = behaviour in MISMATCHES and not scheme  # over TCP nobody else can answer
    assert elapsed <= (BUDGET_S + SLACK_S if waited else BUDGET_S / 2)
    assert "Traceback" not in log
    assert final_status(server)["upstream_health"][0]["failures_in_a_row"] >= 1


@pytest.mark.parametrize("behaviour", DEFECTS + MISMATCHES)
def test_a_broken_answer_fails_over_to_a_good_upstream(
    tmp_path: Path, behaviour: Behaviour
) -> None:
    with (
        FakeNameserver(default=behaviour) as broken,
        FakeNameserver(address="192.0.2.2") as good,
    ):
        server = start_aidns(
            tmp_path,
            f"--upstream={broken.hostport}",
            f"--upstream={good.hostport}",
            f"--upstream-timeout={BUDGET_S}",
        )
        try:
            response, elapsed = ask(server.port(), "either.test")
            assert broken.queries_for("either.test") == 1  # asked first, as configured
        finally:
            log = stopped_log(server)
    assert response.rcode() == dns.rcode.NOERROR
    assert [r.address for r in response.answer[0]] == ["192.0.2.2"]
    assert elapsed <= BUDGET_S + SLACK_S
    assert "Traceback" not in log
