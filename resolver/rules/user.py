"""The user's own rules in `<data-dir>/rules.yaml`: block, allow, and process-scoped blocks.

A rule for everyone becomes a small list in the matcher. A rule scoped to processes (what
`aidns block --surgical` makes) goes into ProcessRules, which the process-rules stage
(stages/processrules.py) asks per query, once the attribution stage has said who asked; a
query whose process is unknown never matches one.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aidns.resolver import yamlio
from aidns.resolver.datafiles import read_limited, write_atomic
from aidns.resolver.errors import ConfigError, excerpt
from aidns.resolver.query import ProcessInfo
from aidns.resolver.rules.lists import DomainList, ListAction, Rule, normalize_domain

RULES_NAME = "rules.yaml"
RULES_MAX_BYTES = 16 << 20
RULE_KEYS = {"name", "kind", "match", "processes", "note", "added"}
KINDS = ("block", "allow")
HEADER = "# aidns rules: written by `aidns block`, `unblock` and `allow`; hand edits are fine.\n"


@dataclass(frozen=True, slots=True)
class UserRule:
    name: str
    kind: str = "block"
    exact: bool = False
    processes: tuple[str, ...] = ()
    note: str = ""
    added: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    @property
    def scope(self) -> str:
        return ", ".join(self.processes) if self.processes else "everyone"

    @property
    def label(self) -> str:
        return "surgical" if self.processes else self.kind

    def as_yaml(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "kind": self.kind}
        entry["match"] = "exact" if self.exact else "subtree"
        if self.processes:
            entry["processes"] = list(self.processes)
        if self.note:
            entry["note"] = self.note
        entry["added"] = self.added
        return entry

    def as_json(self) -> dict[str, str]:
        """The rule as `aidns rules` shows it: kind is block, allow or surgical."""
        return {
            "name": ("=" if self.exact else "") + self.name,
            "kind": self.label,
            "scope": self.scope,
            "note": self.note,
            "added": self.added,
        }

    def covers(self, process: ProcessInfo) -> bool:
        return any(_process_matches(pattern, process) for pattern in self.processes)


def _process_matches(pattern: str, process: ProcessInfo) -> bool:
    """A pattern names a process, a tool, or an executable path (globs allowed)."""
    candidates = (process.name, process.tool, process.exe)
    return any(
        c is not None and fnmatch.fnmatchcase(c.lower(), pattern.lower()) for c in candidates
    )


def load_rules(path: Path) -> list[UserRule]:
    """The rules file, checked; a missing file is no rules. Errors name the file and line."""
    try:
        text = read_limited(path, RULES_MAX_BYTES, "a rules file").decode("utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read rules: {exc.strerror}", source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("rules are not UTF-8 text", source=str(path)) from None
    try:
        node = yamlio.compose(text)
        document = yamlio.load(text)
    except yaml.YAMLError as exc:
        raise yamlio.error(exc, path) from None
    if document is None:
        return []
    entries = document.get("rules") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigError("expected a mapping with a `rules:` list", source=str(path), line=1)
    lines = _item_lines(node)
    rules = []
    for index, entry in enumerate(entries):
        line = lines[index] if index < len(lines) else None
        try:
            rules.append(_parse(entry))
        except ValueError as exc:
            raise ConfigError(str(exc), source=str(path), line=line) from None
    return rules


def _item_lines(node: yaml.Node | None) -> list[int]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "rules" and isinstance(value, yaml.SequenceNode):
                return [item.start_mark.line + 1 for item in value.value]
    return []


def _parse(entry: Any) -> UserRule:
    if not isinstance(entry, dict) or "name" not in entry:
        raise ValueError(f"a rule must be a mapping with `name`, not {excerpt(entry)}")
    unknown = sorted(set(map(str, entry)) - RULE_KEYS)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(RULE_KEYS))}"
        )
    kind = str(entry.get("kind", "block"))
    if kind not in KINDS:
        raise ValueError(f"kind: {excerpt(kind)} is not block or allow")
    match = str(entry.get("match", "subtree"))
    if match not in ("subtree", "exact"):
        raise ValueError(f"match: {excerpt(match)} is not subtree or exact")
    processes = entry.get("processes") or []
    if not isinstance(processes, list) or not all(isinstance(p, str) and p for p in processes):
        raise ValueError("processes: expected a list of process names, tools or paths")
    if processes and kind != "block":
        raise ValueError("only block rules can be scoped to processes")
    return UserRule(
        name=normalize_domain(str(entry["name"])).decode(),
        kind=kind,
        exact=match == "exact",
        processes=tuple(processes),
        note=str(entry.get("note") or ""),
        added=str(entry.get("added") or ""),
    )


def domain_argument(text: str) -> str:
    """A name a person typed, normalized; ConfigError when it is not a domain name."""
    try:
        return normalize_domain(text).decode()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def save_rules(path: Path, rules: Sequence[UserRule]) -> None:
    body = yaml.safe_dump({"rules": [rule.as_yaml() for rule in rules]}, sort_keys=False)
    write_atomic(path, HEADER + body)


def rule_lists(rules: Sequence[UserRule], source: str) -> list[DomainList]:
    """The rules for everyone, as a block list and an allow list for the matcher."""
    made = []
    for kind, action in (("block", ListAction.BLOCK), ("allow", ListAction.ALLOW)):
        domain_list = DomainList(name=f"rules:{kind}", action=action, source=source)
        for rule in rules:
            if rule.kind == kind and not rule.processes:
                domain_list.rules.append(
                    Rule(rule.name, action, domain_list.name, exact=rule.exact)
                )
        made.append(domain_list)
    return made


class ProcessRules:
    """Rules scoped to processes, by the hash of their name like the matcher's small lists."""

    def __init__(self, rules: Sequence[UserRule] = ()) -> None:
        self.rules = tuple(rule for rule in rules if rule.processes)
        self._subtree: dict[int, list[UserRule]] = {}
        self._exact: dict[int, list[UserRule]] = {}
        for rule in self.rules:
            table = self._exact if rule.exact else self._subtree
            table.setdefault(hash(rule.name.encode()), []).append(rule)

    def __bool__(self) -> bool:
        return bool(self._subtree or self._exact)

    def match(self, qname: bytes, process: ProcessInfo) -> UserRule | None:
        for rule in self._exact.get(hash(qname), ()):
            if rule.covers(process):
                return rule
        start = 0
        while True:
            for rule in self._subtree.get(hash(qname[start:]), ()):
                if rule.covers(process):
                    return rule
            dot = qname.find(b".", start)
            if dot < 0:
                return None
            start = dot + 1


@dataclass(slots=True)
class Change:
    """What a rules command did or would do, in words for the person who asked."""

    added: list[UserRule] = field(default_factory=list)
    removed: list[UserRule] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def add_rules(path: Path, new: Sequence[UserRule], *, dry_run: bool = False) -> Change:
    """Add rules, replacing any with the same name, kind, match and scope."""
    rules = load_rules(path)
    change = Change()
    for rule in new:
        same = [
            r
            for r in rules
            if (r.name, r.kind, r.exact, r.processes)
            == (rule.name, rule.kind, rule.exact, rule.processes)
        ]
        for old in same:
            rules.remove(old)
        rules.append(rule)
        change.added.append(rule)
    if not dry_run and change.added:
        save_rules(path, rules)
    return change


def remove_rules(
    path: Path, name: str, kind: str | None = None, *, dry_run: bool = False
) -> Change:
    """Remove every rule of the user's for exactly `name` (of `kind`, if given)."""
    wanted = domain_argument(name)
    rules = load_rules(path)
    change = Change(removed=[r for r in rules if r.name == wanted and kind in (None, r.kind)])
    if change.removed and not dry_run:
        save_rules(path, [r for r in rules if r not in change.removed])
    return change


def plan_surgical(
    name: str,
    seen: Sequence[dict[str, Any]],
    processes: Sequence[str] = (),
    *,
    exact_fallback: bool = False,
    note: str = "",
) -> Change:
    """The narrowest block for `name`, from what the query log saw under it.

    `seen` holds one row per (name looked up, process): `name`, `process`, `tool`, `pid`,
    `relay`. Each name seen becomes an exact rule for the processes that asked, or for the
    `processes` given. Where the asker could not be seen, the rule falls back to everyone.
    """
    domain = domain_argument(name)
    change = Change()
    names: dict[str, set[str]] = {}
    unattributed: set[str] = set()
    for row in seen:
        looked_up = str(row["name"])
        who = row.get("tool") or row.get("process")
        if row.get("relay") or row.get("pid") is None or not who:
            unattributed.add(looked_up)
            names.setdefault(looked_up, set())
        else:
            names.setdefault(looked_up, set()).add(str(who))
    if not names:
        if processes:
            change.added.append(UserRule(domain, processes=tuple(processes), note=note))
            change.messages.append(
                f"nothing seen under {domain} yet; blocking it for {', '.join(processes)}"
            )
        elif exact_fallback:
            change.added.append(UserRule(domain, exact=True, note=note))
            change.messages.append(
                f"nothing seen under {domain} yet; blocking exactly {domain} for everyone"
            )
        else:
            change.messages.append(
                f"nothing under {domain} has been looked up yet, so there is nothing to block "
                "surgically. Run the tool, then try again; or give --process, or --exact to "
                f"block exactly {domain} for everyone now."
            )
        return change
    for looked_up, askers in sorted(names.items()):
        if processes:
            scope = tuple(processes)
        elif looked_up in unattributed or not askers:
            change.messages.append(
                f"{looked_up}: who asked could not be seen (the process is unknown, or a "
                "system resolver relayed the query), so it is blocked for everyone"
            )
            scope = ()
        else:
            scope = tuple(sorted(askers))
        change.added.append(UserRule(looked_up, exact=True, processes=scope, note=note))
    return change
