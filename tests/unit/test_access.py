from __future__ import annotations

import ipaddress

import dns.message
import dns.rcode
import pytest

from aidns.resolver.query import Action
from aidns.resolver.stages.access import AccessStage

from .helpers import make_query


@pytest.mark.parametrize(
    ("client", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("192.168.1.20", True),
        ("192.168.2.20", False),
        ("10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("fd00::5", True),
    ],
)
def test_loopback_and_allow_net_only(client: str, allowed: bool) -> None:
    stage = AccessStage([ipaddress.ip_network("192.168.1.0/24"), ipaddress.ip_network("fd00::/64")])
    query = make_query("example.com", client=client)
    assert stage.answer(query) is not allowed
    if not allowed:
        assert query.decision is not None and query.decision.action is Action.REFUSED
        assert dns.message.from_wire(query.response or b"").rcode() == dns.rcode.REFUSED


def test_no_allow_net_means_loopback_only() -> None:
    assert AccessStage().answer(make_query("example.com", client="192.168.1.20"))
