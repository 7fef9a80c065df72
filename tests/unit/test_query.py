from __future__ import annotations

import struct

import pytest

from aidns.resolver.query import MalformedQuery, Query, Rcode, Transport, rcode_name, skip_name

from .helpers import make_query, make_wire


def parse(raw: bytes) -> Query:
    return Query(raw, ("127.0.0.1", 1), Transport.UDP, 0.0)


def test_question_is_read_lower_case_without_trailing_dot() -> None:
    query = make_query("O1.Ingest.SENTRY.io.", "AAAA")
    assert query.qname == b"o1.ingest.sentry.io"
    assert query.name == "o1.ingest.sentry.io"
    assert (query.qtype, query.qclass) == (28, 1)
    assert query.question_end == len(query.raw)
    assert not query.has_edns


def test_edns_flags_and_size() -> None:
    query = make_query("example.com", dnssec=True)
    assert query.has_edns and query.dnssec_ok
    assert query.udp_size == 1232
    assert not make_query("example.com", edns=True).dnssec_ok


def test_cache_key_separates_type_do_and_cd_but_not_case() -> None:
    keys = {
        make_query("a.example").cache_key(),
        make_query("A.EXAMPLE").cache_key(),
    }
    assert len(keys) == 1
    others = {
        make_query("a.example", "AAAA").cache_key(),
        make_query("a.example", dnssec=True).cache_key(),
        make_query("a.example", cd=True).cache_key(),
    }
    assert len(others | keys) == 4


def header(flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, flags, qd, an, ns, ar)


@pytest.mark.parametrize(
    ("raw", "rcode"),
    [
        (b"", None),
        (b"\x12\x34\x01", None),
        (header(flags=0x8100) + b"\x00\x00\x01\x00\x01", None),  # a response
        (header(qd=0), Rcode.FORMERR),
        (header(qd=2) + b"\x00\x00\x01\x00\x01" * 2, Rcode.FORMERR),
        (header() + b"\x07example", Rcode.FORMERR),  # truncated name
        (header() + b"\x07example\x00\x00", Rcode.FORMERR),  # truncated type/class
        (header() + b"\xc0\x0c\x00\x01\x00\x01", Rcode.FORMERR),  # pointer in question
        (
            header() + b"\x3f" + b"a" * 63 + (b"\x3f" + b"a" * 63) * 3 + b"\x00\x00\x01\x00\x01",
            Rcode.FORMERR,
        ),
        (header(flags=0x2800) + b"\x00\x00\x06\x00\x01", Rcode.NOTIMP),  # UPDATE
    ],
)
def test_malformed(raw: bytes, rcode: Rcode | None) -> None:
    with pytest.raises(MalformedQuery) as caught:
        parse(raw)
    assert caught.value.rcode == rcode


def test_root_query() -> None:
    query = parse(make_wire(".", "NS"))
    assert query.qname == b"" and query.qtype == 2


def test_rcode_names_come_from_the_enum() -> None:
    assert [rcode_name(number) for number in range(7)] == [
        "NOERROR",
        "FORMERR",
        "SERVFAIL",
        "NXDOMAIN",
        "NOTIMP",
        "REFUSED",
        "6",
    ]


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"\x00rest", 1),  # the root
        (b"\x07example\x03com\x00rest", 13),
        (b"\x03www\xc0\x0crest", 6),  # ends in a pointer
    ],
)
def test_skip_name(data: bytes, end: int) -> None:
    assert skip_name(data, 0) == end


def test_skip_name_rejects_extended_labels_and_runs_off_the_end() -> None:
    with pytest.raises(ValueError):
        skip_name(b"\x40abc", 0)
    with pytest.raises(IndexError):
        skip_name(b"\x07exam", 0)


def edns_wire(name: str = "x.example", version: int = 0, options: bytes = b"") -> bytes:
    """A query with one OPT record: payload 1232, DO set, `version`, raw `options`."""
    question = dns_question(name)
    opt = b"\x00" + struct.pack("!HHBBHH", 41, 1232, 0, version, 0x8000, len(options)) + options
    return header(ar=1) + question + opt


def dns_question(name: str) -> bytes:
    labels = b"".join(bytes((len(p),)) + p.encode() for p in name.split("."))
    return labels + b"\x00\x00\x01\x00\x01"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (header(an=1) + dns_question("a.example"), "answer or authority"),
        (header(ns=1) + dns_question("a.example"), "answer or authority"),
        (header() + dns_question("a.example") + b"\x00", "1 bytes after the question"),
        (edns_wire() + b"junk", "does not end the packet"),
        (edns_wire()[:-1], "is cut off"),
        (header(ar=1) + dns_question("a.example"), "is cut off"),
        (header(ar=1) + dns_question("a.example") + b"\x01a" + bytes(10), "not an OPT record"),
        (edns_wire()[:-11] + b"\x00\x00\x01" + edns_wire()[-8:], "type 1, not OPT"),
        (header(ar=2) + edns_wire()[12:] + edns_wire()[-11:], "2 additional records"),
        (edns_wire(options=b"\x00\x0a\x00\x08abc"), "runs past the packet"),
        (edns_wire(options=b"\x00\x0a\x00"), "cut off"),
    ],
)
def test_anything_but_one_question_and_one_opt_is_formerr(raw: bytes, why: str) -> None:
    with pytest.raises(MalformedQuery, match=why) as caught:
        parse(raw)
    assert caught.value.rcode == Rcode.FORMERR


def test_a_well_formed_opt_with_options_is_read() -> None:
    query = parse(edns_wire(options=b"\x00\x0a\x00\x08" + b"c" * 8))
    assert query.dnssec_ok and query.udp_size == 1232


def test_a_newer_edns_version_is_badvers_with_the_question_read() -> None:
    raw = edns_wire(version=1)
    with pytest.raises(MalformedQuery) as caught:
        parse(raw)
    assert caught.value.rcode == Rcode.BADVERS
    assert caught.value.question_end == len(raw) - 11
