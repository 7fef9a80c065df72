"""Query, the one object that flows through the pipeline, and the decision it carries."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, NamedTuple

_HEADER = struct.Struct("!HHHHHH")
_TYPE_CLASS = struct.Struct("!HH")
_OPT_FIXED = struct.Struct("!HHIH")  # type, payload size, ext-rcode/version/flags, rdlength

OPT = 41
MAX_NAME_WIRE = 255
PLAIN_UDP_SIZE = 512
DO_BIT = 0x8000


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"


class Action(StrEnum):
    """What the pipeline did with a query; these are the verdicts of the query log."""

    BLOCKED = "blocked"
    ALLOWED = "allowed"
    WATCHED = "watched"
    FORWARDED = "forwarded"
    CACHED = "cached"
    REFUSED = "refused"
    ERROR = "error"


class Rcode(int, Enum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    BADVERS = 16  # extended (RFC 6891): 0 in the header, 1 in the OPT record's upper bits


_RCODE_NAMES = {rcode.value: rcode.name for rcode in Rcode}


def rcode_name(number: int) -> str:
    """`NXDOMAIN` for 3: the name of an rcode, or the number itself when it has none here."""
    return _RCODE_NAMES.get(number) or str(number)


class Decision(NamedTuple):
    """Why a query was answered the way it was: the verdict, the rule and the list."""

    action: Action
    rule: str = ""
    list_name: str = ""


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """The process that sent a query, as far as the OS lets us see it."""

    pid: int | None
    name: str | None
    exe: str | None = None
    cmdline: str | None = None
    uid: int | None = None
    tool: str | None = None
    user: str | None = None  # login name of uid
    relay: bool = False  # a system resolver asking for programs we can't see
    note: str | None = None  # why the picture is incomplete: relay, time budget, privileges


class MalformedQuery(Exception):
    """The packet is not a query we can answer; `rcode` says how to refuse it, None drops it.
    `question_end` is where its question ends, when it was read (0 otherwise)."""

    def __init__(self, reason: str, rcode: Rcode | None, question_end: int = 0):
        super().__init__(reason)
        self.rcode = rcode
        self.question_end = question_end


class Query:
    """One client question, decoded only as far as the hot path needs."""

    __slots__ = (
        "answered_at",
        "client",
        "client_reusable_until",
        "client_socket",
        "decision",
        "edns_flags",
        "process",
        "process_pending",
        "qclass",
        "qname",
        "qtype",
        "question_end",
        "raw",
        "received_at",
        "response",
        "reusable_until",
        "server",
        "transport",
        "udp_size",
        "upstream",
    )

    def __init__(
        self,
        raw: bytes,
        client: tuple[Any, ...],
        transport: Transport,
        received_at: float,
        server: tuple[Any, ...] = (),
    ) -> None:
        self.raw = raw
        self.client = client
        self.server = server
        self.transport = transport
        self.received_at = received_at
        self.process: ProcessInfo | None = None
        self.process_pending = False  # attribution goes on after the answer: see Pipeline
        self.decision: Decision | None = None
        self.response: bytes | None = None
        self.upstream: str | None = None
        self.reusable_until = 0.0
        self.client_reusable_until = 0.0
        self.client_socket: tuple[int, int] | None = None  # set by attribution: which socket
        self.answered_at = 0.0
        self.qname, self.question_end = _read_question_name(raw)
        self.qtype, self.qclass = _TYPE_CLASS.unpack_from(raw, self.question_end - 4)
        self.edns_flags, self.udp_size = _read_edns(raw, self.question_end)

    def replay(
        self,
        raw: bytes,
        client: tuple[Any, ...],
        transport: Transport,
        received_at: float,
        server: tuple[Any, ...] = (),
    ) -> Query:
        """A new query whose bytes after the ID equal this one's, without parsing them again."""
        query: Query = object.__new__(Query)
        query.raw = raw
        query.client = client
        query.server = server
        query.transport = transport
        query.received_at = received_at
        query.process = None
        query.process_pending = False
        query.decision = self.decision
        query.response = None
        query.upstream = None
        query.reusable_until = 0.0
        query.client_reusable_until = 0.0
        query.client_socket = None
        query.answered_at = 0.0
        query.qname = self.qname
        query.question_end = self.question_end
        query.qtype = self.qtype
        query.qclass = self.qclass
        query.edns_flags = self.edns_flags
        query.udp_size = self.udp_size
        return query

    @property
    def has_edns(self) -> bool:
        return self.edns_flags is not None

    @property
    def dnssec_ok(self) -> bool:
        return self.edns_flags is not None and bool(self.edns_flags & DO_BIT)

    @property
    def id(self) -> int:
        return int.from_bytes(self.raw[:2], "big")

    @property
    def name(self) -> str:
        """The queried name in lower case without the trailing dot ("" for the root)."""
        return self.qname.decode("ascii", "backslashreplace")

    def cache_key(self) -> bytes:
        """Name, type, class, and the flags that change an answer (DO, CD)."""
        flags = (2 if self.dnssec_ok else 0) | (1 if self.raw[3] & 0x10 else 0)
        return self.qname + self.raw[self.question_end - 4 : self.question_end] + bytes((flags,))


def _read_question_name(raw: bytes) -> tuple[bytes, int]:
    """Validate the header and return (lower-case dotted qname, offset after qtype/qclass)."""
    if len(raw) < 12:
        raise MalformedQuery("shorter than a DNS header", None)
    flags = raw[2]
    if flags & 0x80:
        raise MalformedQuery("a response, not a query", None)
    if flags & 0x78:
        raise MalformedQuery(f"opcode {(flags >> 3) & 0xF} is not QUERY", Rcode.NOTIMP)
    if raw[4] or raw[5] != 1:
        raise MalformedQuery(f"QDCOUNT is {raw[4] << 8 | raw[5]}, not 1", Rcode.FORMERR)
    if raw[6] or raw[7] or raw[8] or raw[9]:  # as Unbound: a query has neither
        raise MalformedQuery("a query with answer or authority records", Rcode.FORMERR)
    labels = []
    pos = 12
    end = len(raw)
    while True:
        if pos >= end:
            raise MalformedQuery("question runs past the packet", Rcode.FORMERR)
        length = raw[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:
            raise MalformedQuery("compressed or oversized label in question", Rcode.FORMERR)
        labels.append(raw[pos + 1 : pos + 1 + length])
        pos += 1 + length
    if pos - 12 > MAX_NAME_WIRE:
        raise MalformedQuery("name longer than 255 octets", Rcode.FORMERR)
    if pos + 4 > end:
        raise MalformedQuery("question runs past the packet", Rcode.FORMERR)
    return b".".join(labels).lower(), pos + 4


def skip_name(data: bytes, pos: int) -> int:
    """The offset after the name at `pos`, which may end in a compression pointer; ValueError
    for a label that is neither a length nor a pointer, IndexError when it runs off the end."""
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length > 63:
            raise ValueError("bad label")
        pos += 1 + length


def _read_edns(raw: bytes, pos: int) -> tuple[int | None, int]:
    """Return (EDNS flags word, client's UDP size) from the additional section, which may hold
    one OPT record and nothing else; the packet must end with it."""
    count = raw[10] << 8 | raw[11]
    end = len(raw)
    if count == 0:
        if pos != end:
            raise MalformedQuery(f"{end - pos} bytes after the question", Rcode.FORMERR)
        return None, PLAIN_UDP_SIZE
    if count > 1:  # RFC 6891 6.1.1: more than one OPT is FORMERR; we take no other record
        raise MalformedQuery(f"{count} additional records, not one OPT", Rcode.FORMERR)
    question_end = pos
    if pos + 11 > end:
        raise MalformedQuery("the additional record is cut off", Rcode.FORMERR)
    if raw[pos] != 0:  # an OPT record's owner is the root
        raise MalformedQuery("the additional record is not an OPT record", Rcode.FORMERR)
    rtype, size, ttl, length = _OPT_FIXED.unpack_from(raw, pos + 1)
    if rtype != OPT:
        raise MalformedQuery(f"an additional record of type {rtype}, not OPT", Rcode.FORMERR)
    pos += 11
    if pos + length != end:
        raise MalformedQuery("the OPT record does not end the packet", Rcode.FORMERR)
    while pos < end:
        if pos + 4 > end:
            raise MalformedQuery("an EDNS option is cut off", Rcode.FORMERR)
        pos += 4 + (raw[pos + 2] << 8 | raw[pos + 3])
    if pos != end:
        raise MalformedQuery("an EDNS option runs past the packet", Rcode.FORMERR)
    version = ttl >> 16 & 0xFF
    if version:
        raise MalformedQuery(f"EDNS version {version}", Rcode.BADVERS, question_end)
    return ttl & 0xFFFF, max(size, PLAIN_UDP_SIZE)
