"""The process-rules stage: blocks for the processes a rule names, and only for them."""

from __future__ import annotations

import pytest

from aidns.resolver.query import ProcessInfo
from aidns.resolver.replies import BlockResponse
from aidns.resolver.rules.active import ActiveRules, RuleHolder
from aidns.resolver.rules.matcher import DomainMatcher
from aidns.resolver.rules.user import ProcessRules, UserRule, rule_lists
from aidns.resolver.stages.processrules import ProcessRulesStage

from .helpers import make_query

OLLAMA = ProcessInfo(pid=10, name="ollama", exe="/usr/local/bin/ollama", tool="ollama")


CURL = ProcessInfo(pid=11, name="curl", exe="/usr/bin/curl")


@pytest.mark.parametrize(
    ("name", "process", "blocked"),
    [
        ("o1.ingest.sentry.io", OLLAMA, True),
        ("o1.ingest.sentry.io", CURL, False),
        ("o2.ingest.sentry.io", OLLAMA, False),
        ("x.cursor.sh", ProcessInfo(pid=1, name="Cursor", exe="/opt/cursor/cursor"), True),
        ("x.cursor.sh", ProcessInfo(pid=None, name=None, uid=1000), False),
    ],
)
def test_process_scoped_rules(name: str, process: ProcessInfo, blocked: bool) -> None:
    rules = ProcessRules(
        [
            UserRule("o1.ingest.sentry.io", exact=True, processes=("ollama",)),
            UserRule("cursor.sh", processes=("/opt/cursor/*",)),
        ]
    )
    stage = ProcessRulesStage(RuleHolder(ActiveRules(DomainMatcher(), rules, BlockResponse())))
    query = make_query(name)
    query.process = process
    assert stage.answer(query) is blocked
    if blocked:
        assert query.decision is not None and query.decision.list_name == "rules:surgical"


def test_allow_beats_a_scoped_block() -> None:
    allow = rule_lists([UserRule("sentry.io", kind="allow")], "r")
    rules = ProcessRules([UserRule("o1.ingest.sentry.io", exact=True, processes=("ollama",))])
    stage = ProcessRulesStage(RuleHolder(ActiveRules(DomainMatcher(allow), rules, BlockResponse())))
    query = make_query("o1.ingest.sentry.io")
    query.process = OLLAMA
    assert not stage.answer(query)


def test_while_process_rules_are_in_effect_no_answer_is_repeated_unasked() -> None:
    """The pipeline's repeats skip the per-client stages; with process rules the answer
    depends on the program, and a port may change hands between two packets."""
    rules = ProcessRules([UserRule("o1.ingest.sentry.io", exact=True, processes=("ollama",))])
    stage = ProcessRulesStage(RuleHolder(ActiveRules(DomainMatcher(), rules, BlockResponse())))
    query = make_query("other.example")
    query.process = CURL
    query.client_reusable_until = 60.0
    assert not stage.answer(query)
    assert query.client_reusable_until == query.received_at
    without = ProcessRulesStage(
        RuleHolder(ActiveRules(DomainMatcher(), ProcessRules(), BlockResponse()))
    )
    query = make_query("other.example")
    query.client_reusable_until = 60.0
    without.answer(query)
    assert query.client_reusable_until == 60.0
