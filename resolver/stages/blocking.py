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
import time
from typing import ClassVar

from aidns.resolver.query import Action, Decision, Query
from aidns.resolver.replies import BlockResponse
from aidns.resolver.rules.matcher import DomainMatcher


class BlockingStage:
    name: ClassVar[str] = "blocking"
    per_client: ClassVar[bool] = False

    def __init__(self, matcher: DomainMatcher, block_response: BlockResponse) -> None:
        self.matcher = matcher
        self.block_response = block_response
        self.paused_until: float | None = None

    def answer(self, query: Query) -> bool:
        decision = self.matcher.decide(query.qname)
        if decision is None:
            return False
        paused = self.paused_until is not None and time.time() < self.paused_until
        if decision.action is Action.BLOCKED and paused:
            query.decision = Decision(Action.ALLOWED, "paused", decision.list_name)
            return False
        query.decision = decision
        if decision.action is not Action.BLOCKED:
            return False
        query.response = self.block_response.reply_to(query)
        query.reusable_until = math.inf
        return True
