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

    @property
    def typed(self) -> str:
        """The name as the rules commands take it: `=name` for exactly the name."""
        return ("=" if self.exact else "") + self.name

    @property
    def undo(self) -> str:
        """The command that removes this rule and no other."""
        verb = "unblock" if self.kind == "block" else "unallow"
        name = self.typed if self.exact else f"*.{self.name}"
        return f"aidns {verb} {name}" + "".join(f" --process {p}" for p in self.processes)

    def as_json(self) -> dict[str, str]:
        """The rule as `aidns rules` shows it: kind is block, allow or surgical."""
        return {
            "name": self.typed,
            "kind": self.label,
            "scope": self.scope,
            "note": self.note,
            "added": self.added,
            "undo": self.undo,
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
    path: Path,
    name: str,
    kind: str | None = None,
    *,
    exact: bool | None = None,
    processes: Sequence[str] | None = None,
    dry_run: bool = False,
) -> Change:
    """Remove the user's rules for exactly `name`: of `kind`, and of that match (`exact`) and
    scope (`processes`, in any order) when given."""
    wanted = domain_argument(name)
    scope = None if processes is None else sorted(processes)
    rules = load_rules(path)
    change = Change(
        removed=[
            r
            for r in rules
            if r.name == wanted
            and kind in (None, r.kind)
            and exact in (None, r.exact)
            and (scope is None or sorted(r.processes) == scope)
        ]
    )
    if change.removed and not dry_run:
        save_rules(path, [r for r in rules if r not in change.removed])
    return change


def covering_allows(rules: Sequence[UserRule], name: str) -> list[UserRule]:
    """The user's allow rules that let `name` through whatever blocks it."""
    return [
        r
        for r in rules
        if r.kind == "allow" and (r.name == name or (not r.exact and name.endswith("." + r.name)))
    ]


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
    `relay`, and `exe` when known. Without `processes`, each name an AI tool (one the tool
    catalogue knows) looked up becomes an exact rule for those tools; every other asker is
    left alone and named. With `processes`, only the names those processes looked up count,
    and the rules are for them; with none seen, `name` itself is blocked for them.
    """
    domain = domain_argument(name)
    change = Change()
    names: dict[str, set[str]] = {}
    left_alone: dict[str, set[str]] = {}
    for row in seen:
        looked_up = str(row["name"])
        asker = ProcessInfo(
            row.get("pid"), row.get("process"), row.get("exe"), tool=row.get("tool")
        )
        if processes:
            if any(_process_matches(pattern, asker) for pattern in processes):
                names.setdefault(looked_up, set()).update(processes)
        elif row.get("tool") and row.get("pid") is not None and not row.get("relay"):
            names.setdefault(looked_up, set()).add(str(row["tool"]))
        else:
            who = row.get("process") if not row.get("relay") else None
            left_alone.setdefault(str(who or ""), set()).add(looked_up)
    for who, looked in sorted(left_alone.items()):
        shown = ", ".join(sorted(looked)[:3]) + (" …" if len(looked) > 3 else "")
        if who:
            change.messages.append(
                f"left alone: {who} (not a known AI tool) looked up {shown}; "
                f"include it with --process {who}"
            )
        else:
            change.messages.append(
                f"left alone: {shown}, looked up by a program aidns could not see (the system "
                "resolver relayed it, or the process had gone); name it with --process"
            )
    if not names:
        change.messages.extend(_nothing_seen(domain, processes, exact_fallback, note, change))
        return change
    for looked_up, askers in sorted(names.items()):
        change.added.append(
            UserRule(looked_up, exact=True, processes=tuple(sorted(askers)), note=note)
        )
    return change


def _nothing_seen(
    domain: str, processes: Sequence[str], exact_fallback: bool, note: str, change: Change
) -> list[str]:
    if processes:
        change.added.append(UserRule(domain, processes=tuple(processes), note=note))
        return [
            f"{', '.join(processes)} looked up nothing under {domain} yet; blocking it for them"
        ]
    if exact_fallback:
        change.added.append(UserRule(domain, exact=True, note=note))
        return [
            f"no AI tool looked up anything under {domain} yet; "
            f"blocking exactly {domain} for everyone"
        ]
    return [
        f"no AI tool has looked up anything under {domain} yet, so there is nothing to block "
        "surgically. Run the tool, then try again; or give --process, or --exact to "
        f"block exactly {domain} for everyone now."
    ]
