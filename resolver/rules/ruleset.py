"""The rule set: every list, the config's and the user's rules, built together from Settings.

A RuleSet is what decides a name. It is built off the serving path and swapped in whole on a
reload, so a query never sees half of one set and half of another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aidns.resolver.config import Settings
from aidns.resolver.errors import ConfigError
from aidns.resolver.rules.catalogue import apply_list_choices
from aidns.resolver.rules.lastgood import LastGood
from aidns.resolver.rules.lists import DomainList, ListAction, Rule, normalize_domain
from aidns.resolver.rules.loading import load_lists
from aidns.resolver.rules.matcher import DomainMatcher
from aidns.resolver.rules.user import RULES_NAME, ProcessRules, load_rules, rule_lists


def config_rules(settings: Settings) -> list[DomainList]:
    """The `block:` and `allow:` names of the config file, as two small lists."""
    made = []
    for key, names, action in (
        ("block", settings.block, ListAction.BLOCK),
        ("allow", settings.allow, ListAction.ALLOW),
    ):
        domain_list = DomainList(
            name=f"config:{key}", action=action, source=str(settings.config_path)
        )
        for text in names:
            exact = text.startswith("=")
            try:
                domain = normalize_domain(text.lstrip("=")).decode()
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}", source=str(settings.config_path)) from None
            domain_list.rules.append(Rule(domain, action, domain_list.name, exact=exact))
        made.append(domain_list)
    return made


@dataclass(slots=True)
class RuleSet:
    """Everything that decides a name, read together. The matcher is compiled when first
    asked for: the keeper's child compiles the lists into a snapshot of its own."""

    lists: list[DomainList]
    process_rules: ProcessRules
    problems: list[str]
    _matcher: DomainMatcher | None = None

    @property
    def matcher(self) -> DomainMatcher:
        if self._matcher is None:
            self._matcher = DomainMatcher(self.lists)
        return self._matcher


def build_rule_set(settings: Settings, last_good: LastGood | None = None) -> RuleSet:
    """Every enabled list, the config's and the user's rules. A broken list file is reported
    and skipped, or with `last_good` replaced by its last good version; a broken rules file
    raises, so a reload keeps the rules in effect."""
    lists, problems = load_lists(settings.list_dirs, settings.list_limits, last_good)
    problems.extend(apply_list_choices(lists, settings))
    rules_path = settings.data_dir / RULES_NAME
    user_rules = load_rules(rules_path)
    lists.extend(config_rules(settings))
    lists.extend(rule_lists(user_rules, str(rules_path)))
    return RuleSet(lists, ProcessRules(user_rules), problems)


def list_info(lists: list[DomainList]) -> list[dict[str, Any]]:
    """What `status` and the start-up log say of each list."""
    return [
        {"name": d.name, "entries": len(d), "enabled": d.enabled, "source": d.source}
        | ({"block_ttl": d.block_ttl_s} if d.block_ttl_s is not None else {})
        for d in lists
    ]


def describe_lists(list_info: list[dict[str, Any]], rule_count: int) -> str:
    """The lists on, with their entries, and the rules in all: for the log and `--check`."""
    enabled = [f"{d['name']} ({d['entries']})" for d in list_info if d["enabled"] and d["entries"]]
    return f"lists: {', '.join(enabled) or 'none'}; {rule_count} rules"
