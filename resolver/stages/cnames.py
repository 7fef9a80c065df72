"""CNAME inspection: a forwarded answer whose CNAME chain reaches a blocked name is sinkholed.

Description:
    Trackers hide behind first-party names (`metrics.example.com` CNAME to an analytics
    ingest host). When a forwarded answer holds CNAME records, each target is looked up in the
    rules in effect; the first that is blocked (and not allowed) turns the answer into the
    block response for the question, logged with the rule and the CNAME that led there, as
    Pi-hole and Blocky do. An answer without a CNAME record costs one byte search. An allow
    rule for the question itself wins; a pause lets the answer through.
Configuration:
    cname_inspection (on by default).
Example:
    cname_inspection: false
"""

from __future__ import annotations

import dnslib

from aidns.resolver.query import Action, Decision, Query
from aidns.resolver.rules.active import RuleHolder

CNAME_IN = b"\x00\x05\x00\x01"  # type CNAME, class IN, as they stand in a record


class CnameInspection:
    def __init__(self, holder: RuleHolder) -> None:
        self.holder = holder

    def blocked(self, query: Query, response: bytes) -> tuple[bytes, Decision] | None:
        """The sinkhole reply and its decision, when the chain reaches a blocked name."""
        if response.find(CNAME_IN, query.question_end) < 0:
            return None
        earlier = query.decision
        if earlier is not None and earlier.action is Action.ALLOWED:
            return None
        rules = self.holder.rules
        if rules.paused():
            return None
        try:
            records = dnslib.DNSRecord.parse(response).rr
        except dnslib.DNSError:
            return None
        for record in records:
            if record.rtype != dnslib.QTYPE.CNAME:
                continue
            target = str(record.rdata).rstrip(".").lower()
            decision = rules.matcher.decide(target.encode())
            if decision is None or decision.action is Action.ALLOWED:
                if decision is not None:
                    return None  # an allowed name on the way lets the answer through
                continue
            if decision.action is Action.BLOCKED:
                why = Decision(
                    Action.BLOCKED, f"{decision.rule} via CNAME {target}", decision.list_name
                )
                return rules.block_response.reply_to(query, decision.list_name), why
        return None
