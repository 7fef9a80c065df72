from __future__ import annotations

from pathlib import Path

import pytest

from aidns.resolver.errors import ListError
from aidns.resolver.query import Action
from aidns.resolver.rules.lists import (
    BIG_LIST_ENTRIES,
    DomainList,
    DomainMatcher,
    ListAction,
    Rule,
    load_list,
    load_lists,
    load_text_list,
    normalize_domain,
)


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


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("Sentry.IO.", b"sentry.io"),
        ("  a-b_c.example ", b"a-b_c.example"),
        ("bücher.example", b"xn--bcher-kva.example"),
    ],
)
def test_normalize_domain(text: str, wire: bytes) -> None:
    assert normalize_domain(text) == wire


@pytest.mark.parametrize(
    "text", ["", "a..b", "-a.example", "a-.example", "a b", "x" * 64 + ".example", "a/b"]
)
def test_normalize_domain_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        normalize_domain(text)


def test_text_list_big_and_small_agree(tmp_path: Path) -> None:
    names = [f"n{i}.example" for i in range(BIG_LIST_ENTRIES + 10)]
    big = tmp_path / "big.txt"
    big.write_text("\n".join(names) + "\n=exact.example\n")
    small = tmp_path / "small.txt"
    small.write_text("# comment\nN5.Example.\n\n=exact.example  # trailing comment\r\n")
    for path, expected in ((big, len(names) + 1), (small, 2)):
        loaded = load_text_list(path)
        assert len(loaded) == expected
        matcher = DomainMatcher([loaded])
        assert matcher.decide(b"sub.n5.example") == (Action.BLOCKED, "n5.example", path.stem)
        assert matcher.decide(b"exact.example") == (Action.BLOCKED, "=exact.example", path.stem)
        assert matcher.decide(b"sub.exact.example") is None
        assert matcher.decide(b"n5.example.org") is None
    assert load_text_list(big).rules == []
    assert [r.text for r in load_text_list(small).rules] == ["n5.example", "=exact.example"]


def test_text_list_bad_lines_are_skipped_and_reported_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    good = [f"good{i}.example" for i in range(3000)]
    lines = [
        *good[:1500],
        "bad..name",
        *good[1500:],
        "has space.example",
        "-dash.example",
        "last.example",
    ]
    path.write_text("\n".join(lines))
    loaded = load_text_list(path)
    assert loaded.skipped == 3
    assert loaded.problems[0] == f"{path}:1501: not a domain name: 'bad..name'"
    assert loaded.problems[1].startswith(f"{path}:3002:")
    matcher = DomainMatcher([loaded])
    assert matcher.decide(b"good2999.example") is not None
    assert matcher.decide(b"last.example") is not None


def test_yaml_list(tmp_path: Path) -> None:
    path = tmp_path / "vendor.yaml"
    path.write_text(
        "name: vendor\ndescription: d\naction: watch\ndomains:\n"
        "  - plain.example\n  - domain: exact.example\n    match: exact\n    purpose: telemetry\n"
        "  - domain: bad..example\n  - {domain: ok.example, colour: red}\n"
    )
    loaded = load_list(path)
    assert loaded.action is ListAction.WATCH
    assert [r.text for r in loaded.rules] == ["plain.example", "=exact.example"]
    assert loaded.rules[1].purpose == "telemetry"
    assert loaded.skipped == 2
    assert loaded.problems[0].startswith(f"{path}:9: ")
    assert "unknown key(s) colour" in loaded.problems[1] and loaded.problems[1].startswith(
        f"{path}:10:"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\ndomains: [a.example\n", ":3: not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("name: x\nactoin: block\ndomains: []\n", "unknown key(s) actoin"),
        ("name: x\naction: nuke\ndomains: []\n", "is not block, watch or allow"),
        ("name: x\ndomains: a.example\n", "`domains` must be a list"),
    ],
)
def test_yaml_list_errors_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    with pytest.raises(ListError) as caught:
        load_list(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_load_lists_keeps_going_past_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: [unclosed\n")
    (tmp_path / "b.txt").write_text("b.example\n")
    (tmp_path / "notes.md").write_text("ignored")
    lists, errors = load_lists([tmp_path])
    assert [d.name for d in lists] == ["b"]
    assert len(errors) == 1 and errors[0].startswith(str(tmp_path / "a.yaml"))


def test_shipped_lists_block_the_guides_names() -> None:
    from aidns.resolver.config import shipped_lists_dir

    lists, errors = load_lists([shipped_lists_dir()])
    assert errors == []
    assert {"lmstudio", "jan", "sentry"} <= {d.name for d in lists}
    matcher = DomainMatcher(lists)
    for name in (b"telemetry.lmstudio.ai", b"analytics.jan.ai", b"o19358.ingest.sentry.io"):
        decision = matcher.decide(name)
        assert decision is not None and decision.action is Action.BLOCKED, name
    assert matcher.decide(b"sentry.io") is None
