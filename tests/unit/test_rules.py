from __future__ import annotations

from pathlib import Path

import pytest

from aidns.resolver.errors import ConfigError
from aidns.resolver.query import Action
from aidns.resolver.rules.matcher import DomainMatcher
from aidns.resolver.rules.user import (
    UserRule,
    add_rules,
    load_rules,
    plan_surgical,
    remove_rules,
    rule_lists,
)


def test_round_trip_and_replace(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    add_rules(
        path, [UserRule("sentry.io", note="too chatty"), UserRule("ok.example", kind="allow")]
    )
    add_rules(path, [UserRule("sentry.io", note="replaced")])
    rules = load_rules(path)
    assert [(r.name, r.kind, r.note) for r in rules] == [
        ("ok.example", "allow", ""),
        ("sentry.io", "block", "replaced"),
    ]
    assert path.read_text().startswith("# aidns rules")
    removed = remove_rules(path, "SENTRY.io.")
    assert [r.name for r in removed.removed] == ["sentry.io"]
    assert [r.name for r in load_rules(path)] == ["ok.example"]


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    add_rules(path, [UserRule("a.example")], dry_run=True)
    assert not path.exists()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("rules:\n  - name: [x\n", ":3: not valid YAML"),
        ("- a\n", ":1: expected a mapping"),
        (
            "rules:\n  - name: a.example\n  - name: b..example\n",
            ":3: 'b..example' is not a domain name",
        ),
        ("rules:\n  - name: a.example\n    kind: nuke\n", ":2: kind: 'nuke'"),
        ("rules:\n  - name: a.example\n    colour: red\n", ":2: unknown key(s) colour"),
        (
            "rules:\n  - name: a.example\n    kind: allow\n    processes: [x]\n",
            ":2: only block rules",
        ),
    ],
)
def test_bad_rules_files_name_file_and_line(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    assert str(caught.value).startswith(str(path) + where)


def test_everyone_rules_become_lists() -> None:
    lists = rule_lists(
        [
            UserRule("a.example"),
            UserRule("b.example", kind="allow"),
            UserRule("c.example", processes=("x",)),
        ],
        "r",
    )
    matcher = DomainMatcher(lists)
    assert matcher.decide(b"x.a.example") is not None
    decision = matcher.decide(b"b.example")
    assert decision is not None and decision.action is Action.ALLOWED
    assert matcher.decide(b"c.example") is None  # scoped rules are not for everyone


def seen(
    name: str, process: str | None, tool: str | None = None, relay: int | None = None
) -> dict[str, object]:
    return {
        "name": name,
        "process": process,
        "tool": tool,
        "pid": 1 if process else None,
        "relay": relay,
    }


def test_surgical_blocks_exact_names_for_the_ai_tools_that_asked_and_names_the_rest() -> None:
    change = plan_surgical(
        "sentry.io",
        [
            seen("o151352.ingest.sentry.io", "python3", "wandb"),
            seen("o151352.ingest.sentry.io", "ollama", "ollama"),
            seen("o19358.ingest.sentry.io", "code"),
            seen("sentry.io", "dig"),
        ],
    )
    assert [(r.name, r.exact, r.processes) for r in change.added] == [
        ("o151352.ingest.sentry.io", True, ("ollama", "wandb")),
    ]
    assert change.messages == [
        "left alone: code (not a known AI tool) looked up o19358.ingest.sentry.io; "
        "include it with --process code",
        "left alone: dig (not a known AI tool) looked up sentry.io; include it with --process dig",
    ]


def test_surgical_leaves_a_hidden_asker_alone_and_says_so() -> None:
    change = plan_surgical(
        "sentry.io",
        [
            seen("o1.ingest.sentry.io", "systemd-resolved", "systemd-resolved", relay=1),
            seen("o2.ingest.sentry.io", None),
        ],
    )
    assert change.added == []
    assert change.messages[0].startswith("left alone: o1.ingest.sentry.io, o2.ingest.sentry.io")
    assert "could not see" in change.messages[0] and "--process" in change.messages[0]


def test_surgical_for_a_process_uses_only_what_that_process_looked_up() -> None:
    rows = [
        seen("o1.ingest.sentry.io", "ollama", "ollama"),
        seen("o2.ingest.sentry.io", "dig"),
        seen("o3.ingest.sentry.io", "cursor", "cursor"),
    ]
    change = plan_surgical("sentry.io", rows, ["ollama"])
    assert [(r.name, r.exact, r.processes) for r in change.added] == [
        ("o1.ingest.sentry.io", True, ("ollama",))
    ]
    by_glob = plan_surgical("sentry.io", rows, ["cur*"])
    assert [r.name for r in by_glob.added] == ["o3.ingest.sentry.io"]


def test_surgical_with_nothing_seen() -> None:
    nothing = plan_surgical("sentry.io", [])
    assert nothing.added == []
    assert "no AI tool has looked up anything under sentry.io yet" in nothing.messages[0]
    exact = plan_surgical("sentry.io", [], exact_fallback=True)
    assert [(r.name, r.exact, r.processes) for r in exact.added] == [("sentry.io", True, ())]
    chosen = plan_surgical("sentry.io", [], ["ollama"])
    assert [(r.name, r.exact, r.processes) for r in chosen.added] == [
        ("sentry.io", False, ("ollama",))
    ]
    other_asked = plan_surgical("sentry.io", [seen("o1.ingest.sentry.io", "curl")], ["ollama"])
    assert [(r.name, r.processes) for r in other_asked.added] == [("sentry.io", ("ollama",))]


def test_a_rules_file_over_its_limit_is_refused_by_name(tmp_path: Path) -> None:
    from aidns.resolver.errors import ConfigError
    from aidns.resolver.rules.user import RULES_MAX_BYTES

    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n" + "#" * RULES_MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"rules.yaml: over 16,777,216 bytes, the most a rules"):
        load_rules(path)
    path.write_bytes(b"rules:\n  - {name: \xff.example}\n")
    with pytest.raises(ConfigError, match=r"rules.yaml: rules are not UTF-8 text"):
        load_rules(path)
