"""Checks an upstream's reply before a client gets it: that it answers our query, and parses.

`mismatch` says a reply is not to our query (another ID, QR clear, another opcode or
question): over UDP it may be spoofed, so it is ignored and the exchange keeps waiting.
`defect` says a reply to our query cannot be used (a cut-off record, a bad name, bytes after
the last record, a misplaced or second OPT): that counts as the upstream's failure.
"""

from __future__ import annotations

import struct

_RR_FIXED = struct.Struct("!HHIH")  # type, class, TTL, rdata length
QR, TC, OPCODE = 0x80, 0x02, 0x78  # bits of the third header byte
OPT = 41
MAX_NAME_WIRE = 255
# RFC 1035 lets these omit the question; dnspython accepts them so too. Never NOERROR/NXDOMAIN.
_MAY_OMIT_QUESTION = frozenset((1, 2, 4, 5))  # FORMERR, SERVFAIL, NOTIMP, REFUSED
# rdata that is exactly a fixed part then names: a client parses these, so must we
_FIXED_SIZE = {1: 4, 28: 16}  # A, AAAA
_NAMES = {2: (0, 1), 5: (0, 1), 12: (0, 1), 39: (0, 1), 15: (2, 1), 33: (6, 1), 6: (0, 2)}
_SOA_TAIL = 20  # serial, refresh, retry, expire, minimum


class BadReply(ValueError):
    """Bytes that are not a usable DNS message."""


def mismatch(response: bytes, wire_id: bytes, question: bytes) -> str | None:
    """Why `response` is not a reply to the query with `wire_id` and `question` (as
    pool._question gives it: lower-case name, type, class), or None when it is."""
    if len(response) < 12:
        return "shorter than a DNS header"
    if response[:2] != wire_id:
        return "another ID"
    if not response[2] & QR:
        return "QR is clear"
    if response[2] & OPCODE:
        return "another opcode"
    count = response[4] << 8 | response[5]
    if count == 0:
        return None if response[3] & 0x0F in _MAY_OMIT_QUESTION else "no question"
    if count > 1:
        return f"{count} questions"
    end = 12
    while end < len(response) and response[end] != 0:
        if response[end] & 0xC0:
            return "a compressed name in the question"
        end += 1 + response[end]
    if end + 5 > len(response):
        return "the question is cut off"
    if response[12:end].lower() + response[end : end + 5] != question:
        return "another question"
    return None


def defect(response: bytes) -> str | None:
    """Why a reply to our query cannot be passed on, or None. A reply with TC set may be cut
    anywhere (RFC 2181 9): only its header and question are read, it is asked again over TCP."""
    try:
        _check_records(response)
    except BadReply as exc:
        return str(exc)
    return None


def _check_records(wire: bytes) -> None:
    questions, answers, authority, additional = struct.unpack_from("!HHHH", wire, 4)
    pos = 12
    for _ in range(questions):
        pos = name_end(wire, pos) + 4
    if pos > len(wire):
        raise BadReply("the question is cut off")
    if wire[2] & TC:
        return
    total = answers + authority + additional
    seen_opt = False
    for index in range(total):
        owner = pos
        pos = name_end(wire, pos)
        if pos + 10 > len(wire):
            raise BadReply(f"record {index + 1} of {total} is cut off")
        rtype, _rclass, _ttl, rdlength = _RR_FIXED.unpack_from(wire, pos)
        rdata, pos = pos + 10, pos + 10 + rdlength
        if pos > len(wire):
            raise BadReply(f"record {index + 1} of {total} is cut off")
        if rtype == OPT:
            if index < answers + authority or seen_opt or wire[owner] != 0:
                raise BadReply("an OPT record out of place, or a second one")
            seen_opt = True
            check_options(wire, rdata, pos)
        else:
            _check_rdata(wire, rtype, rdata, pos)
    if pos != len(wire):
        raise BadReply(f"{len(wire) - pos} bytes after the last record")


def _check_rdata(wire: bytes, rtype: int, start: int, end: int) -> None:
    size = _FIXED_SIZE.get(rtype)
    if size is not None:
        if end - start != size:
            raise BadReply(f"type {rtype} rdata of {end - start} bytes, not {size}")
        return
    layout = _NAMES.get(rtype)
    if layout is None:
        return  # opaque to a forwarder
    fixed, names = layout
    pos = start + fixed
    for _ in range(names):
        pos = name_end(wire, pos, end)
    if rtype == 6:
        pos += _SOA_TAIL
    if pos != end:
        raise BadReply(f"type {rtype} rdata does not end where its length says")


def check_options(wire: bytes, start: int, end: int) -> None:
    """EDNS options, each a code, a length and that many bytes, filling the OPT rdata exactly."""
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise BadReply("an EDNS option is cut off")
        pos += 4 + (wire[pos + 2] << 8 | wire[pos + 3])
    if pos != end:
        raise BadReply("an EDNS option runs past its record")


def name_end(wire: bytes, pos: int, limit: int | None = None) -> int:
    """Where the name at `pos` ends in place. Pointers must point back past the header,
    each before the last (so no loops), and the whole name must fit 255 bytes."""
    limit = len(wire) if limit is None else limit
    end: int | None = None
    floor = pos  # the next pointer must point before this
    length = 0
    while True:
        if pos >= limit:
            raise BadReply("a name is cut off")
        byte = wire[pos]
        if byte & 0xC0 == 0xC0:
            if pos + 1 >= limit:
                raise BadReply("a name is cut off")
            target = (byte & 0x3F) << 8 | wire[pos + 1]
            if not 12 <= target < floor:
                raise BadReply("a name pointer that does not point back")
            if end is None:
                end = pos + 2
            floor = pos = target
            limit = len(wire)
            continue
        if byte & 0xC0:
            raise BadReply("an unknown label type")
        length += byte + 1
        if length > MAX_NAME_WIRE:
            raise BadReply("a name longer than 255 bytes")
        if byte == 0:
            return pos + 1 if end is None else end
        pos += byte + 1
