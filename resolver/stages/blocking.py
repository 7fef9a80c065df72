"""The blocking stage: sinkholes names on block lists, tags watched and allowed ones.

Description:
    Looks the query name up in the DomainMatcher. A blocked name is answered at once with
    the configured block response; a watched or allowed name is tagged and passed on.
Configuration:
    block_response (null, nxdomain, refused, or "<IPv4>,<IPv6>"), block_ttl_s.
Example:
    block_response: "0.0.0.0,::"
"""

from __future__ import annotations

import math
from typing import ClassVar

from aidns.resolver.query import Action, Decision, Query
from aidns.resolver.rules.active import RuleHolder

_BLOCKED = Action.BLOCKED  # a module global: an enum member read off its class costs 0.1 us


class BlockingStage:
    name: ClassVar[str] = "blocking"
    per_client: ClassVar[bool] = False

    def __init__(self, holder: RuleHolder) -> None:
        self.holder = holder

    def answer(self, query: Query) -> bool:
        rules = self.holder.rules
        decision = rules.matcher.decide(query.qname)
        if decision is None:
            return False
        if decision.action is _BLOCKED and rules.paused():
            query.decision = Decision(Action.ALLOWED, "paused", decision.list_name)
            return False
        query.decision = decision
        if decision.action is not _BLOCKED:
            return False
        list_name = decision.list_name
        query.response = rules.block_response.reply_to(
            query, list_name, rules.block_ttls.get(list_name)
        )
        query.reusable_until = math.inf
        return True
