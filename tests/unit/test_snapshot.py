"""Rule snapshots: compiled, written, mapped, and deciding like a plain reading of the rules."""

from __future__ import annotations

import random
from array import array
from pathlib import Path

import pytest

from aidns.resolver.errors import AidnsError
from aidns.resolver.query import Action, Decision
from aidns.resolver.rules.lists import DomainList, ListAction, Rule
from aidns.resolver.rules.matcher import BUCKETED_FROM, DomainMatcher, compile_snapshot
from aidns.resolver.rules.snapshot import map_snapshot, write_snapshot

RANK = {ListAction.ALLOW: 0, ListAction.BLOCK: 1, ListAction.WATCH: 2}
VERDICT = {
    ListAction.ALLOW: Action.ALLOWED,
    ListAction.BLOCK: Action.BLOCKED,
    ListAction.WATCH: Action.WATCHED,
}


def small(name: str, action: ListAction, *entries: str) -> DomainList:
    made = DomainList(name=name, action=action, source=name)
    for entry in entries:
        exact = entry.startswith("=")
        made.rules.append(Rule(entry.lstrip("="), action, name, exact=exact))
    return made


def big(name: str, action: ListAction, names: list[str]) -> DomainList:
    made = DomainList(name=name, action=action, source=name)
    made.subtree_hashes = array("q", sorted({hash(n.encode()) for n in names}))
    return made


def reference(lists: list[DomainList], qname: str) -> Decision | None:
    """The rules read plainly: strongest action, then exact, then the longest name, then
    the first list."""
    labels = qname.split(".")
    suffixes = [".".join(labels[i:]) for i in range(len(labels))]
    found = []
    for number, domain_list in enumerate(lists):
        entries = [(r.domain, r.action, r.exact) for r in domain_list.rules]
        hashed = set(domain_list.subtree_hashes)
        entries += [(s, domain_list.action, False) for s in suffixes if hash(s.encode()) in hashed]
        for domain, action, exact in entries:
            if exact and domain == qname:
                found.append(
                    (
                        (RANK[action], 0, number),
                        Decision(VERDICT[action], "=" + domain, domain_list.name),
                    )
                )
            elif not exact and domain in suffixes:
                order = 1 + suffixes.index(domain)
                found.append(
                    (
                        (RANK[action], order, number),
                        Decision(VERDICT[action], domain, domain_list.name),
                    )
                )
    return min(found)[1] if found else None


def test_decisions_follow_strength_exactness_length_and_list_order() -> None:
    lists = [
        small("telemetry", ListAction.BLOCK, "telemetry.example", "=exact.example"),
        small("mine", ListAction.ALLOW, "ok.telemetry.example"),
        small("watch", ListAction.WATCH, "example", "telemetry.example"),
        small("second", ListAction.BLOCK, "telemetry.example", "deep.ok.telemetry.example"),
    ]
    matcher = DomainMatcher(compiled=compile_snapshot(lists, generation=7))
    assert matcher.generation == 7
    assert matcher.rule_count == 7
    assert matcher.decide(b"a.telemetry.example") == Decision(
        Action.BLOCKED, "telemetry.example", "telemetry"
    )
    assert matcher.decide(b"deep.ok.telemetry.example") == Decision(
        Action.ALLOWED, "ok.telemetry.example", "mine"
    )
    assert matcher.decide(b"exact.example") == Decision(
        Action.BLOCKED, "=exact.example", "telemetry"
    )
    assert matcher.decide(b"sub.exact.example") == Decision(Action.WATCHED, "example", "watch")
    assert matcher.decide(b"other.test") is None


def test_a_disabled_list_is_left_out() -> None:
    off = small("off", ListAction.BLOCK, "off.example")
    off.enabled = False
    matcher = DomainMatcher(compiled=compile_snapshot([off], generation=1))
    assert matcher.decide(b"off.example") is None
    assert matcher.rule_count == 0


def test_big_and_small_lists_agree_with_the_plain_reading() -> None:
    chooser = random.Random(11)
    words = [f"w{n}" for n in range(300)]

    def name() -> str:
        return ".".join(chooser.choice(words) for _ in range(chooser.randint(1, 4)))

    many = sorted({name() for _ in range(BUCKETED_FROM * 3)})
    lists = [
        big("big-block", ListAction.BLOCK, many[: len(many) // 2]),
        big("big-block-2", ListAction.BLOCK, many[len(many) // 3 :]),
        small("allow", ListAction.ALLOW, *{name() for _ in range(50)}),
        small("watch", ListAction.WATCH, *{name() for _ in range(200)}),
        small("exact", ListAction.BLOCK, *{"=" + name() for _ in range(100)}),
    ]
    matcher = DomainMatcher(compiled=compile_snapshot(lists, generation=1))
    for _ in range(3000):
        qname = name()
        assert matcher.decide(qname.encode()) == reference(lists, qname), qname


def test_written_and_mapped(tmp_path: Path) -> None:
    path = tmp_path / "rules.snapshot"
    write_snapshot(path, compile_snapshot([small("l", ListAction.BLOCK, "x.example")], 3))
    matcher = map_snapshot(path)
    assert matcher.generation == 3
    assert matcher.decide(b"a.x.example") == Decision(Action.BLOCKED, "x.example", "l")
    write_snapshot(path, compile_snapshot([small("l", ListAction.BLOCK, "y.example")], 4))
    assert matcher.decide(b"a.x.example") is not None  # the old mapping outlives the rename
    assert map_snapshot(path).decide(b"a.x.example") is None


def test_damaged_or_foreign_snapshots_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.snapshot"
    path.write_bytes(b"not a snapshot at all")
    with pytest.raises(AidnsError, match="not an aidns rule snapshot"):
        map_snapshot(path)
    data = bytearray(compile_snapshot([small("l", ListAction.BLOCK, "x.example")], 1))
    data[20:30] = b"\xff" * 10
    path.write_bytes(bytes(data))
    with pytest.raises(AidnsError, match="damaged"):
        map_snapshot(path)
    with pytest.raises(AidnsError, match="cannot map"):
        map_snapshot(tmp_path / "missing")
