"""The process-rules stage: blocks a name only for the processes a user's rule names.

Description:
    Runs after attribution, before blocking. A rule from `<data-dir>/rules.yaml` scoped to
    processes (what `aidns block --surgical` makes) blocks a name for the processes it names,
    by name, tool or executable path. A query whose process is unknown never matches one, and
    a global allow rule still wins. The stage is per client, so it runs again for a repeated
    question, and a pause lets everything through.
Configuration:
    `<data-dir>/rules.yaml`, written by `aidns block --surgical` or `--process`; the block
    response is the config's `block_response`.
Example:
    aidns block sentry.io --surgical
"""

from __future__ import annotations

import time
from typing import ClassVar

from aidns.resolver.query import Action, Decision, Query
from aidns.resolver.replies import BlockResponse
from aidns.resolver.rules.matcher import DomainMatcher
from aidns.resolver.rules.user import ProcessRules


class ProcessRulesStage:
    """Blocks a name for the processes a rule names; after attribution, before blocking."""

    name: ClassVar[str] = "processrules"
    per_client: ClassVar[bool] = True

    def __init__(self, rules: ProcessRules, matcher: DomainMatcher, block_response: BlockResponse):
        self.rules = rules
        self.matcher = matcher
        self.block_response = block_response
        self.paused_until: float | None = None

    def answer(self, query: Query) -> bool:
        if not self.rules or query.process is None or query.process.pid is None:
            return False
        rule = self.rules.match(query.qname, query.process)
        if rule is None:
            return False
        overall = self.matcher.decide(query.qname)
        if overall is not None and overall.action is Action.ALLOWED:
            return False
        if self.paused_until is not None and time.time() < self.paused_until:
            query.decision = Decision(Action.ALLOWED, "paused", "rules")
            return False
        query.decision = Decision(
            Action.BLOCKED, ("=" if rule.exact else "") + rule.name, "rules:surgical"
        )
        query.response = self.block_response.reply_to(query)
        return True
