"""Small builders shared by the unit tests."""

from __future__ import annotations

import dns.flags
import dns.message

from aidns.resolver.query import Query, Transport


def make_wire(
    name: str, rdtype: str = "A", *, edns: bool = False, dnssec: bool = False, cd: bool = False
) -> bytes:
    message = dns.message.make_query(
        name, rdtype, use_edns=0 if edns or dnssec else None, want_dnssec=dnssec
    )
    if cd:
        message.flags |= dns.flags.CD
    return message.to_wire()


def make_query(name: str, rdtype: str = "A", client: str = "127.0.0.1", **flags: bool) -> Query:
    return Query(make_wire(name, rdtype, **flags), (client, 40000), Transport.UDP, 0.0)
