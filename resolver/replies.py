"""Replies aidns makes itself (sinkhole, NXDOMAIN, errors), built by slicing the query's bytes."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from aidns.resolver.errors import ConfigError
from aidns.resolver.query import DO_BIT, OPT, PLAIN_UDP_SIZE, MalformedQuery, Query, Rcode

TYPE_A = 1
TYPE_AAAA = 28
OUR_UDP_SIZE = 1232  # the DNS flag day 2020 size: no IP fragmentation
_COUNTS = struct.Struct("!HHHH")
_OPT_RR = struct.Struct("!BHHIH")


EDE_OPTION = 15  # RFC 8914
EDE_STALE_ANSWER = 3
EDE_BLOCKED = 15
EDE_TEXT_BYTES = 128  # a list name is short; this keeps the answer small whatever it is


def extended_error(code: int, text: str = "") -> bytes:
    """An Extended DNS Error option (RFC 8914): the info code and a short UTF-8 reason."""
    extra = text.encode("utf-8", "replace")[:EDE_TEXT_BYTES]
    return struct.pack("!HHH", EDE_OPTION, 2 + len(extra), code) + extra


def edns_record(dnssec_ok: bool, extended_rcode: int = 0, options: bytes = b"") -> bytes:
    """Our own OPT record: payload size 1232, version 0, DO mirrored from the client, the
    upper 8 bits of an extended rcode (RFC 6891 6.1.3), and `options` as its data."""
    flags = (extended_rcode >> 4) << 24 | (DO_BIT if dnssec_ok else 0)
    return _OPT_RR.pack(0, OPT, OUR_UDP_SIZE, flags, len(options)) + options


def header_flags(raw: bytes, rcode: int, authoritative: bool = False) -> bytes:
    """QR and RA set; opcode, RD and CD copied from the query."""
    return bytes(
        (0x80 | (raw[2] & 0x79) | (0x04 if authoritative else 0), 0x80 | (raw[3] & 0x10) | rcode)
    )


def reply(
    query: Query, rcode: int, answers: bytes = b"", answer_count: int = 0, options: bytes = b""
) -> bytes:
    """A response with the client's ID and question, the given answer RRs, and our OPT with
    `options` (an extended error, say) if the client sent EDNS."""
    raw = query.raw
    opt = edns_record(query.dnssec_ok, options=options) if query.has_edns else b""
    return b"".join(
        (
            raw[:2],
            header_flags(raw, rcode),
            _COUNTS.pack(1, answer_count, 0, 1 if opt else 0),
            raw[12 : query.question_end],
            answers,
            opt,
        )
    )


def error_reply(raw: bytes, rcode: int) -> bytes | None:
    """A bare error for a packet that did not parse; None when the header is unreadable."""
    if len(raw) < 12 or raw[2] & 0x80:
        return None
    return raw[:2] + bytes((0x80 | (raw[2] & 0x79), 0x80 | rcode)) + bytes(8)


def refusal(raw: bytes, problem: MalformedQuery) -> bytes | None:
    """The answer to a packet that is not a query we answer: none, a bare error, or for an
    EDNS version above 0 BADVERS with the question and our OPT. Never longer than the packet,
    so junk can't be amplified."""
    if problem.rcode is None:
        return None
    end = problem.question_end
    if problem.rcode is Rcode.BADVERS and end:
        dnssec_ok = bool(raw[end + 7] & 0x80)  # the OPT record follows the question: see query.py
        response: bytes | None = b"".join(
            (
                raw[:2],
                header_flags(raw, Rcode.BADVERS & 0x0F),
                _COUNTS.pack(1, 0, 0, 1),
                raw[12:end],
                edns_record(dnssec_ok, Rcode.BADVERS),
            )
        )
    else:
        response = error_reply(raw, problem.rcode & 0x0F)
    return response if response is not None and len(response) <= len(raw) else None


def truncated(response: bytes, question_end: int) -> bytes:
    """Header and question of a response, with TC set: for a UDP client with a small buffer."""
    return (
        response[:2]
        + bytes((response[2] | 0x02, response[3]))
        + b"\x00\x01"
        + bytes(6)
        + response[12:question_end]
    )


def fit_udp(query: Query, response: bytes) -> bytes:
    limit = query.udp_size if query.has_edns else PLAIN_UDP_SIZE
    if len(response) <= limit:
        return response
    return truncated(response, query.question_end)


@dataclass(frozen=True, slots=True)
class BlockResponse:
    """How blocked names are answered: `null` (0.0.0.0, ::), `nxdomain`, `refused`, or two IPs."""

    mode: str = "null"
    ipv4: bytes = bytes(4)
    ipv6: bytes = bytes(16)
    ttl_s: int = 60
    extended_errors: bool = True  # say Blocked (RFC 8914) with the list's name
    records: tuple[bytes, ...] = field(default=(), init=False, repr=False, compare=False)

    @classmethod
    def parse(
        cls,
        text: str,
        ttl_s: int = 60,
        source: str | None = None,
        extended_errors: bool = True,
    ) -> BlockResponse:
        value = text.strip().lower()
        if value in ("null", "nxdomain", "refused"):
            return cls(mode=value, ttl_s=ttl_s, extended_errors=extended_errors)
        parts = [part.strip() for part in value.split(",")]
        try:
            addresses = [ipaddress.ip_address(part) for part in parts if part]
        except ValueError as exc:
            raise ConfigError(
                f"block_response: {text!r} is not null, nxdomain, refused or "
                f"'<IPv4>,<IPv6>' ({exc})",
                source=source,
            ) from None
        v4 = [a for a in addresses if a.version == 4]
        v6 = [a for a in addresses if a.version == 6]
        if len(v4) > 1 or len(v6) > 1 or not addresses:
            raise ConfigError(
                f"block_response: {text!r} must give at most one IPv4 and one IPv6 address",
                source=source,
            )
        return cls(
            mode="ip",
            ipv4=v4[0].packed if v4 else bytes(4),
            ipv6=v6[0].packed if v6 else bytes(16),
            ttl_s=ttl_s,
            extended_errors=extended_errors,
        )

    def __str__(self) -> str:
        if self.mode != "ip":
            return self.mode
        return f"{ipaddress.IPv4Address(self.ipv4)},{ipaddress.IPv6Address(self.ipv6)}"

    def reply_to(self, query: Query, list_name: str = "", ttl_s: int | None = None) -> bytes:
        """The reply to a blocked query, as this block response says; to an EDNS client, with
        Blocked and the list's name as an extended error. `ttl_s` is the list's own TTL."""
        why = b""
        if self.extended_errors and query.has_edns:
            why = extended_error(EDE_BLOCKED, list_name)
        if self.mode == "nxdomain":
            return reply(query, Rcode.NXDOMAIN, options=why)
        if self.mode == "refused":
            return reply(query, Rcode.REFUSED, options=why)
        if query.qclass != 1 or query.qtype not in (TYPE_A, TYPE_AAAA):
            return reply(query, Rcode.NOERROR, options=why)
        record = self.records[0 if query.qtype == TYPE_A else 1]
        if ttl_s is not None and ttl_s != self.ttl_s:
            record = record[:6] + struct.pack("!I", ttl_s) + record[10:]
        return reply(query, Rcode.NOERROR, record, 1, options=why)

    def __post_init__(self) -> None:
        records = tuple(
            struct.pack("!HHHIH", 0xC00C, rdtype, 1, self.ttl_s, len(rdata)) + rdata
            for rdtype, rdata in ((TYPE_A, self.ipv4), (TYPE_AAAA, self.ipv6))
        )
        object.__setattr__(self, "records", records)
