"""The query log's rcode and answer columns, read from a response's bytes."""

from __future__ import annotations

import ipaddress
import struct

import dnslib

from aidns.resolver.query import rcode_name, skip_name

_RR_FIXED = struct.Struct("!HHIH")


def summarize(response: bytes, question_end: int) -> tuple[str, str]:
    """(rcode, short answer text). Plain address answers are read here directly; anything
    else (CNAME chains, MX, TXT, ...) is rendered by dnslib."""
    if len(response) < 12:
        return "", ""
    rcode = rcode_name(response[3] & 0xF)
    count = response[6] << 8 | response[7]
    addresses: list[str] = []
    pos = question_end
    try:
        for _ in range(count):
            pos = skip_name(response, pos)
            rtype, _rclass, _ttl, rdlength = _RR_FIXED.unpack_from(response, pos)
            rdata = response[pos + 10 : pos + 10 + rdlength]
            pos += 10 + rdlength
            if rtype == 1 and rdlength == 4:
                addresses.append(str(ipaddress.IPv4Address(rdata)))
            elif rtype == 28 and rdlength == 16:
                addresses.append(str(ipaddress.IPv6Address(rdata)))
            else:
                return rcode, _summarize_with_dnslib(response)
    except (IndexError, ValueError, struct.error):
        return rcode, "(malformed)"
    return rcode, " ".join(addresses)


def _summarize_with_dnslib(response: bytes, limit: int = 200) -> str:
    try:
        record = dnslib.DNSRecord.parse(response)
    except dnslib.DNSError:
        return "(malformed)"
    parts = []
    for rr in record.rr:
        kind = dnslib.QTYPE.get(rr.rtype, str(rr.rtype))
        parts.append(str(rr.rdata) if kind in ("A", "AAAA") else f"{kind} {rr.rdata}")
    text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"
