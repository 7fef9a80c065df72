"""The rules in effect: one frozen object that the serving threads read and a reload replaces.

Readers take `holder.rules` once per query and use only that object, so a query never sees
half of an old rule set and half of a new one. Writers (the reload thread, the pause timer)
replace it whole under `RuleHolder.lock`; CPython makes the single reference store atomic.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aidns.resolver.replies import BlockResponse
from aidns.resolver.rules.matcher import DomainMatcher
from aidns.resolver.rules.user import ProcessRules


@dataclass(frozen=True, slots=True)
class ActiveRules:
    """What decides a name now: the compiled lists, the process rules, the block response and
    whether blocking is paused."""

    matcher: DomainMatcher
    process_rules: ProcessRules = field(default_factory=ProcessRules)
    block_response: BlockResponse = field(default_factory=BlockResponse)
    paused_until: float | None = None
    block_ttls: dict[str, int] = field(default_factory=dict)  # by list, where it sets its own

    def paused(self) -> bool:
        return self.paused_until is not None and time.time() < self.paused_until


class RuleHolder:
    """Holds the ActiveRules the stages share; `put` and `replace` swap them whole."""

    __slots__ = ("lock", "rules")

    def __init__(self, rules: ActiveRules) -> None:
        self.rules = rules
        self.lock = threading.Lock()

    def put(self, rules: ActiveRules) -> None:
        """Swap in `rules` whole."""
        with self.lock:
            self.rules = rules

    def replace(self, **changes: Any) -> ActiveRules:
        """New rules with `changes`, swapped in at once; returns them."""
        with self.lock:
            self.rules = dataclasses.replace(self.rules, **changes)
            return self.rules
