"""Looking at the lists without changing them: each list's state and entries, and what a
name gets and why (`aidns lists`, `aidns lists show`, `aidns check`)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aidns.resolver.config import Settings
from aidns.resolver.datafiles import read_pause
from aidns.resolver.errors import ConfigError
from aidns.resolver.query import Action, Decision
from aidns.resolver.rules.catalogue import (
    ListState,
    UnknownListError,
    enabled_and_why,
    list_names,
    read_state,
)
from aidns.resolver.rules.lists import (
    DomainList,
    ListAction,
    Rule,
    domain_covers,
    normalize_domain,
    read_source,
)
from aidns.resolver.rules.loading import load_list, load_lists
from aidns.resolver.rules.ruleset import build_rule_set
from aidns.resolver.rules.user import RULES_NAME, load_rules


@dataclass(frozen=True, slots=True)
class ListInfo:
    """One row of `aidns lists`."""

    name: str
    actions: tuple[str, ...]
    enabled: bool
    why: str
    enabled_by_default: bool
    entries: int
    evidenced: int  # entries with a source and not marked `verified: false`
    unverified: int  # entries marked `verified: false`: not counted as evidenced coverage
    origin: str  # shipped, added (by `aidns lists add`), or local (a file you put there)
    source: str
    path: str
    updated: float | None
    checked: float | None
    description: str
    homepage: str
    skipped: int
    problems: tuple[str, ...]
    last_error: str

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "actions": list(self.actions),
            "enabled": self.enabled,
            "why": self.why,
            "default": self.enabled_by_default,
            "entries": self.entries,
            "evidenced": self.evidenced,
            "unverified": self.unverified,
            "origin": self.origin,
            "source": self.source,
            "path": self.path,
            "updated": self.updated,
            "checked": self.checked,
            "description": self.description,
            "homepage": self.homepage,
            "skipped": self.skipped,
            "problems": list(self.problems),
            "last_error": self.last_error,
        }


def _info(domain_list: DomainList, settings: Settings, state: ListState) -> ListInfo:
    path = Path(domain_list.source)
    enabled, why = enabled_and_why(domain_list, settings, state)
    meta = read_source(path)
    shipped = path.parent == settings.list_dirs[0] if settings.list_dirs else False
    origin = "shipped" if shipped else "added" if meta else "local"
    updated: float | None = None
    if meta:
        updated = meta.get("updated")
    elif not shipped:
        try:
            updated = path.stat().st_mtime
        except OSError:
            updated = None
    return ListInfo(
        name=domain_list.name,
        actions=tuple(map(str, domain_list.actions())),
        enabled=enabled,
        why=why,
        enabled_by_default=domain_list.enabled_by_default,
        entries=len(domain_list),
        evidenced=sum(1 for rule in domain_list.rules if rule.verified and rule.evidence),
        unverified=sum(1 for rule in domain_list.rules if not rule.verified),
        origin=origin,
        source=str(meta.get("source") or ("shipped" if shipped else path)),
        path=str(path),
        updated=updated,
        checked=meta.get("checked"),
        description=domain_list.description,
        homepage=domain_list.homepage,
        skipped=domain_list.skipped,
        problems=tuple(domain_list.problems),
        last_error=str(meta.get("error") or ""),
    )


def list_infos(settings: Settings) -> tuple[list[ListInfo], list[str]]:
    """Every list with its state, in name order, and the problems met loading them."""
    lists, problems = load_lists(settings.list_dirs)
    state = read_state(settings.data_dir)
    infos = [_info(domain_list, settings, state) for domain_list in lists]
    return sorted(infos, key=lambda info: info.name), problems


def show_list(settings: Settings, name: str) -> tuple[ListInfo, DomainList]:
    """One list, loaded, with its state; UnknownListError names the lists there are."""
    chosen = _load_one(settings, name)
    return _info(chosen, settings, read_state(settings.data_dir)), chosen


def _load_one(settings: Settings, name: str) -> DomainList:
    """Just the named list (the one that wins when two directories have it)."""
    files = list_names(settings.list_dirs)
    if name not in files:
        raise UnknownListError(name, files)
    return load_list(files[name])


@dataclass(frozen=True, slots=True)
class Match:
    """One rule of one list that names the queried name, whether or not the list is on."""

    list_name: str
    rule: str
    action: ListAction
    enabled: bool
    entry: Rule | None


_VERDICTS = {
    Action.BLOCKED: "blocked",
    Action.ALLOWED: "allowed",
    Action.WATCHED: "watched",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the server would do with a name, and why."""

    name: str
    verdict: str  # blocked, allowed, watched or forwarded
    decision: Decision | None
    entry: Rule | None
    matches: tuple[Match, ...]
    surgical: tuple[str, ...] = ()
    paused_until: float | None = None

    def as_json(self) -> dict[str, Any]:
        entry = self.entry
        return {
            "name": self.name,
            "verdict": self.verdict,
            "rule": self.decision.rule if self.decision else None,
            "list": self.decision.list_name if self.decision else None,
            "entry": entry_json(entry) if entry else None,
            "matches": [
                {
                    "list": m.list_name,
                    "rule": m.rule,
                    "action": str(m.action),
                    "enabled": m.enabled,
                    "entry": entry_json(m.entry) if m.entry else None,
                }
                for m in self.matches
            ],
            "surgical": list(self.surgical),
            "paused_until": self.paused_until,
        }


def entry_json(rule: Rule) -> dict[str, Any]:
    """A list entry as the JSON of `aidns lists show` and `aidns check` gives it."""
    return {
        "domain": rule.domain,
        "match": "exact" if rule.exact else "subtree",
        "action": str(rule.action),
        "purpose": rule.purpose,
        "breaks": rule.breaks,
        "evidence": rule.evidence,
        "verified": rule.verified,
        "note": rule.note,
        "tools": list(rule.tools),
    }


def check_name(settings: Settings, name: str) -> Verdict:
    """The verdict the running rules give a name, the rule and list behind it, every other
    list rule that names it (on or off), and the user's process-scoped rules for it."""
    try:
        wire = normalize_domain(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    rule_set = build_rule_set(settings)
    decision = rule_set.matcher.decide(wire)
    matches = tuple(m for d in rule_set.lists for m in _matches(d, wire))
    entry = None
    if decision is not None:
        entry = next(
            (
                m.entry
                for m in matches
                if m.enabled and m.list_name == decision.list_name and m.rule == decision.rule
            ),
            None,
        )
    surgical = tuple(
        f"{rule.kind} for {rule.scope} ({'=' if rule.exact else ''}{rule.name})"
        for rule in load_rules(settings.data_dir / RULES_NAME)
        if rule.processes and domain_covers(rule.name, rule.exact, wire.decode())
    )
    return Verdict(
        name=wire.decode(),
        verdict=_VERDICTS[decision.action] if decision else "forwarded",
        decision=decision,
        entry=entry,
        matches=matches,
        surgical=surgical,
        paused_until=read_pause(settings.data_dir),
    )


def _matches(domain_list: DomainList, wire: bytes) -> list[Match]:
    name = wire.decode()
    found = [
        Match(domain_list.name, rule.text, rule.action, domain_list.enabled, rule)
        for rule in domain_list.rules
        if domain_covers(rule.domain, rule.exact, name)
    ]
    if _contains(domain_list.exact_hashes, hash(wire)):
        found.append(
            Match(domain_list.name, "=" + name, domain_list.action, domain_list.enabled, None)
        )
    labels = name.split(".")
    for start in range(len(labels)):
        suffix = ".".join(labels[start:])
        if _contains(domain_list.subtree_hashes, hash(suffix.encode())):
            found.append(
                Match(domain_list.name, suffix, domain_list.action, domain_list.enabled, None)
            )
    return found


def _contains(hashes: Sequence[int], key: int) -> bool:
    index = bisect_left(hashes, key)
    return index < len(hashes) and hashes[index] == key
