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

from typing import ClassVar

from aidns.resolver.query import Action, Decision, Query
from aidns.resolver.rules.active import RuleHolder


class ProcessRulesStage:
    """Blocks a name for the processes a rule names; after attribution, before blocking."""

    name: ClassVar[str] = "processrules"
    per_client: ClassVar[bool] = True

    def __init__(self, holder: RuleHolder) -> None:
        self.holder = holder

    def answer(self, query: Query) -> bool:
        rules = self.holder.rules
        if not rules.process_rules:
            return False
        # the verdict depends on the process: no repeats, whose socket is checked only later
        query.client_reusable_until = min(query.client_reusable_until, query.received_at)
        if query.process is None or query.process.pid is None:
            return False
        rule = rules.process_rules.match(query.qname, query.process)
        if rule is None:
            return False
        overall = rules.matcher.decide(query.qname)
        if overall is not None and overall.action is Action.ALLOWED:
            return False
        if rules.paused():
            query.decision = Decision(Action.ALLOWED, "paused", "rules")
            return False
        query.decision = Decision(
            Action.BLOCKED, ("=" if rule.exact else "") + rule.name, "rules:surgical"
        )
        query.response = rules.block_response.reply_to(query, "rules:surgical")
        return True
