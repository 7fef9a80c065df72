"""Upstream replies: which are not to our query, and which are ours but unusable."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rrset
import pytest

from aidns.resolver.upstream.exchange import _question
from aidns.resolver.validate import defect, mismatch


def query_and_answer(
    name: str = "www.example.test", edns: bool = False
) -> tuple[bytes, dns.message.Message]:
    query = dns.message.make_query(name, "A", use_edns=0 if edns else None)
    response = dns.message.make_response(query)
    owner = dns.name.from_text(name)
    response.answer.append(dns.rrset.from_text(owner, 60, "IN", "A", "192.0.2.1"))
    response.answer.append(dns.rrset.from_text(owner, 60, "IN", "CNAME", f"alias.{name}."))
    return query.to_wire(), response


def check(query: bytes, response: bytes) -> str | None:
    return mismatch(response, query[:2], _question(query))


def test_a_good_answer_passes_both_checks() -> None:
    query, response = query_and_answer(edns=True)
    wire = response.to_wire()
    assert check(query, wire) is None and defect(wire) is None


def test_the_name_is_compared_without_case() -> None:
    query, response = query_and_answer("Mixed.Example.Test")
    upper = dns.message.from_wire(query)
    upper.question[0].name = dns.name.from_text("MIXED.example.TEST")
    assert check(upper.to_wire(), response.to_wire()) is None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda m: setattr(m, "id", (m.id + 1) % 65536), "another ID"),
        (lambda m: setattr(m, "flags", m.flags & ~dns.flags.QR), "QR is clear"),
        (lambda m: m.set_opcode(dns.opcode.NOTIFY), "another opcode"),
        (lambda m: m.question.clear(), "no question"),
        (lambda m: m.question.append(m.question[0]), "2 questions"),
    ],
)
def test_replies_not_to_our_query(change, why: str) -> None:  # type: ignore[no-untyped-def]
    query, response = query_and_answer()
    change(response)
    assert check(query, response.to_wire()) == why


def test_another_question_is_not_ours() -> None:
    query, _ = query_and_answer("one.test")
    _, other = query_and_answer("two.test")
    other.id = dns.message.from_wire(query).id
    assert check(query, other.to_wire()) == "another question"
    wire = bytearray(dns.message.from_wire(query).to_wire())
    wire[2] |= 0x80
    struct.pack_into("!H", wire, len(wire) - 4, 28)  # AAAA
    assert check(query, bytes(wire)) == "another question"


@pytest.mark.parametrize("rcode", [dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.REFUSED])
def test_an_error_may_leave_the_question_out(rcode: int) -> None:
    query, response = query_and_answer()
    response.answer.clear()
    response.question.clear()
    response.set_rcode(rcode)
    assert check(query, response.to_wire()) is None


def test_nxdomain_without_a_question_is_not_ours() -> None:
    query, response = query_and_answer()
    response.answer.clear()
    response.question.clear()
    response.set_rcode(dns.rcode.NXDOMAIN)
    assert check(query, response.to_wire()) == "no question"


@pytest.mark.parametrize("cut", [1, 2, 5, 12, 20])
def test_a_cut_off_record_is_a_defect(cut: int) -> None:
    _, response = query_and_answer()
    wire = response.to_wire()[:-cut]
    assert defect(wire) is not None


def test_bytes_after_the_last_record_are_a_defect() -> None:
    _, response = query_and_answer()
    assert defect(response.to_wire() + b"\x00") == "1 bytes after the last record"


def test_a_truncated_reply_is_read_only_to_its_question() -> None:
    _, response = query_and_answer()
    response.flags |= dns.flags.TC
    assert defect(response.to_wire()[:-3]) is None


def test_a_second_opt_or_a_bad_option_is_a_defect() -> None:
    _, response = query_and_answer()
    response.use_edns(0)
    wire = bytearray(response.to_wire())
    doubled = bytearray(wire + wire[-11:])
    struct.pack_into("!H", doubled, 10, 2)
    assert defect(bytes(doubled)) == "an OPT record out of place, or a second one"
    struct.pack_into("!H", wire, len(wire) - 2, 3)  # an rdlength of 3 bytes that are not there
    assert defect(bytes(wire + b"\x00\x0a\x00")) == "an EDNS option is cut off"


def test_pointers_must_point_back_and_rdata_must_fit_its_type() -> None:
    _, response = query_and_answer()
    wire = response.to_wire()
    # the first answer's owner is a pointer to the question (offset 12): point it forward
    at = wire.index(b"\xc0\x0c", 12)
    forward = wire[:at] + struct.pack("!H", 0xC000 | at) + wire[at + 2 :]
    assert defect(forward) == "a name pointer that does not point back"
    short_a = dns.message.from_wire(wire)
    wire = short_a.to_wire()
    rdata = wire.index(bytes((192, 0, 2, 1)))
    bad = bytearray(wire[:rdata] + b"\xc0\x00\x02" + wire[rdata + 4 :])
    struct.pack_into("!H", bad, rdata - 2, 3)
    assert defect(bytes(bad)) == "type 1 rdata of 3 bytes, not 4"


def test_a_name_in_rdata_must_end_where_the_rdata_does() -> None:
    _, response = query_and_answer()
    wire = response.to_wire()
    cname_length_at = len(wire) - 2 - len(b"\x05alias\xc0\x0c")  # the CNAME's rdlength
    bad = bytearray(wire + b"\x00")
    struct.pack_into(
        "!H", bad, cname_length_at, struct.unpack_from("!H", wire, cname_length_at)[0] + 1
    )
    assert defect(bytes(bad)) == "type 5 rdata does not end where its length says"
