"""The matcher: subtree and exact rules, and which list wins when several name a name."""

from __future__ import annotations

import pytest

from aidns.resolver.query import Action
from aidns.resolver.rules.lists import DomainList, ListAction, Rule
from aidns.resolver.rules.matcher import DomainMatcher


def rules(action: ListAction, *names: str, list_name: str = "test") -> DomainList:
    domain_list = DomainList(name=list_name, action=action, source="test")
    for name in names:
        domain_list.rules.append(
            Rule(name.lstrip("="), action, list_name, exact=name.startswith("="))
        )
    return domain_list


@pytest.mark.parametrize(
    ("qname", "verdict"),
    [
        (b"sentry.io", Action.BLOCKED),
        (b"o1.ingest.sentry.io", Action.BLOCKED),
        (b"notsentry.io", None),
        (b"io", None),
        (b"host.example", Action.BLOCKED),
        (b"sub.host.example", None),
        (b"ok.sentry.io", Action.ALLOWED),
        (b"deep.ok.sentry.io", Action.ALLOWED),
        (b"api.openai.com", Action.WATCHED),
        (b"x.blocked.openai.com", Action.BLOCKED),
    ],
)
def test_subtree_exact_and_precedence(qname: bytes, verdict: Action | None) -> None:
    matcher = DomainMatcher(
        [
            rules(ListAction.BLOCK, "sentry.io", "=host.example", "blocked.openai.com"),
            rules(ListAction.ALLOW, "ok.sentry.io", list_name="mine"),
            rules(ListAction.WATCH, "openai.com", list_name="cloud"),
        ]
    )
    decision = matcher.decide(qname)
    assert (decision.action if decision else None) == verdict


def test_decision_names_rule_and_list() -> None:
    matcher = DomainMatcher(
        [rules(ListAction.BLOCK, "sentry.io", "=host.example", list_name="vendor")]
    )
    assert matcher.decide(b"a.sentry.io") == (Action.BLOCKED, "sentry.io", "vendor")
    assert matcher.decide(b"host.example") == (Action.BLOCKED, "=host.example", "vendor")


def test_allow_beats_block_even_when_less_specific() -> None:
    matcher = DomainMatcher(
        [rules(ListAction.BLOCK, "a.b.example"), rules(ListAction.ALLOW, "example")]
    )
    decision = matcher.decide(b"a.b.example")
    assert decision is not None and decision.action is Action.ALLOWED


def test_disabled_list_does_not_match() -> None:
    domain_list = rules(ListAction.BLOCK, "sentry.io")
    domain_list.enabled = False
    assert DomainMatcher([domain_list]).decide(b"sentry.io") is None
