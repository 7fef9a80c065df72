from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import pytest

from aidns.resolver.errors import ConfigError
from aidns.resolver.query import MalformedQuery, Query, Rcode, Transport
from aidns.resolver.replies import BlockResponse, error_reply, fit_udp, refusal, reply

from .helpers import make_query


def answer_of(response: bytes) -> dns.message.Message:
    return dns.message.from_wire(response)


@pytest.mark.parametrize(
    ("mode", "rdtype", "rcode", "address"),
    [
        ("null", "A", dns.rcode.NOERROR, "0.0.0.0"),
        ("null", "AAAA", dns.rcode.NOERROR, "::"),
        ("null", "TXT", dns.rcode.NOERROR, None),
        ("nxdomain", "A", dns.rcode.NXDOMAIN, None),
        ("refused", "AAAA", dns.rcode.REFUSED, None),
        ("10.1.2.3,fd00::1", "A", dns.rcode.NOERROR, "10.1.2.3"),
        ("10.1.2.3,fd00::1", "AAAA", dns.rcode.NOERROR, "fd00::1"),
    ],
)
def test_block_response(mode: str, rdtype: str, rcode: int, address: str | None) -> None:
    query = make_query("Telemetry.Example", rdtype)
    message = answer_of(BlockResponse.parse(mode, ttl_s=30).reply_to(query))
    assert message.id == query.id
    assert message.rcode() == rcode
    assert str(message.question[0].name) == "Telemetry.Example."
    assert message.flags & dns.flags.QR and message.flags & dns.flags.RD
    if address is None:
        assert message.answer == []
    else:
        (rrset,) = message.answer
        assert [r.address for r in rrset] == [address]
        assert rrset.ttl == 30


def test_block_response_mirrors_edns_and_do() -> None:
    message = answer_of(BlockResponse().reply_to(make_query("t.example", dnssec=True)))
    assert message.edns == 0 and message.ednsflags & dns.flags.DO
    assert answer_of(BlockResponse().reply_to(make_query("t.example"))).edns == -1


@pytest.mark.parametrize("text", ["bogus", "1.2.3.4,5.6.7.8", "1.2.3", ""])
def test_block_response_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="block_response"):
        BlockResponse.parse(text)


def test_error_reply_keeps_id() -> None:
    raw = make_query("x.example").raw
    response = error_reply(raw, Rcode.FORMERR)
    assert response is not None and response[:2] == raw[:2]
    assert response[3] & 0xF == Rcode.FORMERR and response[2] & 0x80
    assert error_reply(raw[:5], Rcode.FORMERR) is None


def test_fit_udp_truncates_to_the_clients_size() -> None:
    query = make_query("big.example", "TXT")
    big = reply(query, Rcode.NOERROR, b"\x00" * 600, 0)
    cut = fit_udp(query, big)
    assert len(cut) == query.question_end and cut[2] & 0x02
    assert answer_of(cut).flags & dns.flags.TC
    edns_query = make_query("big.example", "TXT", edns=True)
    assert fit_udp(edns_query, big) is big


def test_badvers_carries_the_question_and_our_opt_and_is_no_longer_than_the_query() -> None:
    query = dns.message.make_query("new.example", "A", use_edns=1, want_dnssec=True, payload=4096)
    raw = query.to_wire()
    with pytest.raises(MalformedQuery) as caught:
        Query(raw, ("127.0.0.1", 1), Transport.UDP, 0.0)
    response = refusal(raw, caught.value)
    assert response is not None and len(response) <= len(raw)
    message = answer_of(response)
    assert message.id == query.id and message.question == query.question
    assert message.rcode() == dns.rcode.BADVERS and response[3] & 0x0F == 0
    assert message.edns == 0 and message.payload == 1232 and message.ednsflags & dns.flags.DO


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        (b"\x12\x34\x81\x00" + bytes(8), None),  # a response: never answered
        (b"\x12\x34\x01", None),  # no header
        (b"\x12\x34\x01\x00\x00\x02" + bytes(6), 12),  # FORMERR: the bare header
    ],
)
def test_a_refusal_is_never_longer_than_the_packet(raw: bytes, size: int | None) -> None:
    with pytest.raises(MalformedQuery) as caught:
        Query(raw, ("127.0.0.1", 1), Transport.UDP, 0.0)
    response = refusal(raw, caught.value)
    assert (None if response is None else len(response)) == size
