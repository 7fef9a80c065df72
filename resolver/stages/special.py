"""The special-names stage: names aidns answers itself so that clients keep using it.

Description:
    Firefox asks `use-application-dns.net` before it turns on its own DNS over HTTPS, and
    stays with the system's resolver when the answer is NXDOMAIN. Safari and macOS ask
    `mask.icloud.com` and `mask-h2.icloud.com` before iCloud Private Relay takes their lookups
    away, and stay when the answer is NXDOMAIN. Clients that discover designated resolvers
    (RFC 9462) ask `_dns.resolver.arpa`: a NODATA answer tells them of no encrypted resolver
    to go around aidns with. Each is a lookup of the canary itself, so these answers are the
    rcode clients check, never a sinkhole address, and hold whatever the lists and pause say.
    They are logged as blocked, with the list `special`.
Configuration:
    firefox_canary, private_relay_canary, hide_resolver_discovery (each on by default).
Example:
    firefox_canary: false
"""

from __future__ import annotations

import math
from typing import ClassVar

from aidns.resolver.config import Protections
from aidns.resolver.query import Action, Decision, Query, Rcode
from aidns.resolver.replies import EDE_BLOCKED, extended_error, reply

SPECIAL_LIST = "special"
FIREFOX_CANARY = b"use-application-dns.net"
PRIVATE_RELAY_CANARIES = (b"mask.icloud.com", b"mask-h2.icloud.com")
RESOLVER_ARPA = b"resolver.arpa"


class SpecialNamesStage:
    name: ClassVar[str] = "special"
    per_client: ClassVar[bool] = False

    def __init__(self, protections: Protections) -> None:
        self.protections = protections
        self._nxdomain: dict[bytes, Decision] = {}
        self.use(protections)
        self._resolver_arpa = Decision(Action.BLOCKED, "resolver discovery", SPECIAL_LIST)

    def use(self, protections: Protections) -> None:
        """Take the protections a reload brings; swapped whole, as the serving threads read."""
        nxdomain: dict[bytes, Decision] = {}
        if protections.firefox_canary:
            nxdomain[FIREFOX_CANARY] = Decision(Action.BLOCKED, "firefox canary", SPECIAL_LIST)
        if protections.private_relay_canary:
            for canary in PRIVATE_RELAY_CANARIES:
                nxdomain[canary] = Decision(
                    Action.BLOCKED, "icloud private relay canary", SPECIAL_LIST
                )
        self._nxdomain = nxdomain
        self.protections = protections

    def answer(self, query: Query) -> bool:
        name = query.qname
        decision = self._nxdomain.get(name)
        if decision is not None:
            rcode = Rcode.NXDOMAIN
        elif self.protections.resolver_discovery and (
            name == RESOLVER_ARPA or name.endswith(b"." + RESOLVER_ARPA)
        ):
            decision, rcode = self._resolver_arpa, Rcode.NOERROR  # NODATA
        else:
            return False
        why = b""
        if self.protections.extended_errors and query.has_edns:
            why = extended_error(EDE_BLOCKED, f"{SPECIAL_LIST}: {decision.rule}")
        query.decision = decision
        query.response = reply(query, rcode, options=why)
        query.reusable_until = math.inf
        return True
