"""The list catalogue: which lists there are, which are on and why, and what a name gets.

A list is on when its file says `default: on`, unless the config's `lists: {enable, disable}`
says otherwise, unless `aidns lists enable/disable` (`<data-dir>/lists.state.yaml`) says
otherwise again: the state file is applied last because it holds the latest thing you said.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aidns.resolver import yamlio
from aidns.resolver.config import Settings
from aidns.resolver.datafiles import locked, read_pause, write_atomic
from aidns.resolver.errors import ConfigError
from aidns.resolver.query import Action, Decision
from aidns.resolver.rules.lists import (
    LIST_KEYS,
    YAML_SUFFIXES,
    DomainList,
    ListAction,
    Rule,
    list_files,
    load_list,
    load_lists,
    normalize_domain,
    parse_switch,
    source_path,
)
from aidns.resolver.rules.user import RULES_NAME, load_rules

STATE_NAME = "lists.state.yaml"
STATE_HEADER = (
    "# Written by `aidns lists enable` and `aidns lists disable`; applied after the config's\n"
    "# `lists:`, so the latest choice wins. Hand edits are fine.\n"
)
PURPOSES = (
    "telemetry",
    "analytics",
    "crash",
    "update",
    "model-registry",
    "license",
    "cloud-inference",
    "core-service",
)
BREAKS = ("no", "partial", "yes")
LIST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?")
SHIPPED_REQUIRED = ("name", "description", "homepage", "action", "default", "domains")
ENTRY_REQUIRED = ("domain", "purpose", "breaks", "evidence")
SHIPPED_ENTRY_KEYS = (
    "domain",
    "match",
    "action",
    "purpose",
    "breaks",
    "evidence",
    "verified",
    "note",
)
# Hosts that many programs share: no shipped list may block them or anything above them.
# A leading `*.` stands for any name below.
SHARED_INFRASTRUCTURE = (
    "github.com",
    "api.github.com",
    "raw.githubusercontent.com",
    "objects.githubusercontent.com",
    "githubusercontent.com",
    "huggingface.co",
    "hf.co",
    "cdn-lfs.hf.co",
    "pypi.org",
    "files.pythonhosted.org",
    "quay.io",
    "s3.amazonaws.com",
    "*.s3.amazonaws.com",
    "storage.googleapis.com",
    "googleapis.com",
    "*.r2.cloudflarestorage.com",
    "blob.core.windows.net",
    "*.blob.core.windows.net",
    "openaipublic.blob.core.windows.net",
    "*.a.run.app",
    "sentry.io",
    "posthog.com",
    "mixpanel.com",
    "registry.ollama.ai",
)


class UnknownListError(ConfigError):
    """A list name that no list file has."""

    def __init__(self, name: str, known: Iterable[str]):
        self.known = sorted(known)
        super().__init__(f"no list named {name!r}; the lists are: {', '.join(self.known)}")


@dataclass(frozen=True, slots=True)
class ListState:
    """What `aidns lists enable/disable` recorded."""

    enable: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()


def read_state(data_dir: Path) -> ListState:
    """The state file; a missing one is no choices. Errors name the file and line."""
    path = data_dir / STATE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ListState()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from None
    try:
        document = yamlio.load(text)
    except yaml.YAMLError as exc:
        raise yamlio.error(exc, path) from None
    document = document or {}
    names: dict[str, tuple[str, ...]] = {}
    if isinstance(document, dict) and set(document) <= {"enable", "disable"}:
        for key in ("enable", "disable"):
            value = document.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                break
            names[key] = tuple(value)
    if len(names) != 2:
        raise ConfigError(
            "expected a mapping with `enable` and `disable`, each a list of list names",
            source=str(path),
        )
    return ListState(enable=names["enable"], disable=names["disable"])


def _write_state(data_dir: Path, state: ListState) -> None:
    body = yaml.safe_dump(
        {"enable": list(state.enable), "disable": list(state.disable)},
        default_flow_style=None,
        sort_keys=False,
    )
    write_atomic(data_dir / STATE_NAME, STATE_HEADER + body)


def enabled_and_why(
    domain_list: DomainList, settings: Settings, state: ListState
) -> tuple[bool, str]:
    """Whether a list is on, and what decided it: default, config, or the state file."""
    on, why = domain_list.enabled_by_default, "default"
    if domain_list.name in settings.disabled_lists:
        on, why = False, "config"
    elif domain_list.name in settings.enabled_lists:
        on, why = True, "config"
    if domain_list.name in state.disable:
        on, why = False, "lists disable"
    elif domain_list.name in state.enable:
        on, why = True, "lists enable"
    return on, why


def apply_list_choices(lists: Sequence[DomainList], settings: Settings) -> list[str]:
    """Turn lists on and off as the config and the state file say; the problems found."""
    state = read_state(settings.data_dir)
    names = {domain_list.name for domain_list in lists}
    problems = [
        f"lists: no list named {wanted!r} (have: {', '.join(sorted(names))})"
        for wanted in dict.fromkeys((*settings.enabled_lists, *settings.disabled_lists))
        if wanted not in names
    ]
    problems.extend(
        f"{settings.data_dir / STATE_NAME}: no list named {wanted!r} any more"
        for wanted in (*state.enable, *state.disable)
        if wanted not in names
    )
    for domain_list in lists:
        domain_list.enabled, _ = enabled_and_why(domain_list, settings, state)
    return problems


def list_names(directories: Iterable[Path]) -> dict[str, Path]:
    """Every list's name and file, without loading the lists (a text list is named by its file)."""
    found: dict[str, Path] = {}
    for path in list_files(directories):
        name = path.stem
        if path.suffix.lower() in YAML_SUFFIXES:
            try:
                document = yamlio.load(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                document = None
            if isinstance(document, dict) and document.get("name"):
                name = str(document["name"])
        found[name] = path
    return found


@dataclass(frozen=True, slots=True)
class Switch:
    """What `lists enable/disable` did."""

    name: str
    enabled: bool
    was_enabled: bool
    config_said: bool | None


def set_list_enabled(settings: Settings, name: str, enabled: bool) -> Switch:
    """Record that a list is to be on or off; UnknownListError names the lists there are."""
    files = list_names(settings.list_dirs)
    if name not in files:
        raise UnknownListError(name, files)
    path = files[name]
    # Only a YAML list has a `default`; a text list, maybe of a million names, needn't load.
    chosen = (
        load_list(path)
        if path.suffix.lower() in YAML_SUFFIXES
        else DomainList(name, ListAction.BLOCK, str(path))
    )
    with locked(settings.data_dir):
        state = read_state(settings.data_dir)
        was, _ = enabled_and_why(chosen, settings, state)
        enable = [n for n in state.enable if n != name]
        disable = [n for n in state.disable if n != name]
        (enable if enabled else disable).append(name)
        _write_state(settings.data_dir, ListState(tuple(enable), tuple(disable)))
    config_said = (
        False
        if name in settings.disabled_lists
        else True
        if name in settings.enabled_lists
        else None
    )
    return Switch(name, enabled, was, config_said)


def forget_list(settings: Settings, name: str) -> None:
    """Drop a removed list from the state file (the caller holds the data-dir lock)."""
    state = read_state(settings.data_dir)
    if name in state.enable or name in state.disable:
        _write_state(
            settings.data_dir,
            ListState(
                tuple(n for n in state.enable if n != name),
                tuple(n for n in state.disable if n != name),
            ),
        )


@dataclass(frozen=True, slots=True)
class ListInfo:
    """One row of `aidns lists`."""

    name: str
    actions: tuple[str, ...]
    enabled: bool
    why: str
    enabled_by_default: bool
    entries: int
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


def read_source(list_path: Path) -> dict[str, Any]:
    """The sidecar `aidns lists add` wrote beside a list; {} when there is none."""
    try:
        meta = json.loads(source_path(list_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


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
    }


def check_name(settings: Settings, name: str) -> Verdict:
    """The verdict the running rules give a name, the rule and list behind it, every other
    list rule that names it (on or off), and the user's process-scoped rules for it."""
    from aidns.resolver.app import build_rules  # service builds on this module

    try:
        wire = normalize_domain(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    rules = build_rules(settings)
    decision = rules.matcher.decide(wire)
    matches = tuple(m for d in rules.lists for m in _matches(d, wire))
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
        if rule.processes and _covers(rule.name, rule.exact, wire.decode())
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


def _covers(domain: str, exact: bool, name: str) -> bool:
    return name == domain or (not exact and name.endswith("." + domain))


def _matches(domain_list: DomainList, wire: bytes) -> list[Match]:
    name = wire.decode()
    found = [
        Match(domain_list.name, rule.text, rule.action, domain_list.enabled, rule)
        for rule in domain_list.rules
        if _covers(rule.domain, rule.exact, name)
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


def validate_catalogue(directory: Path) -> list[str]:
    """Everything wrong with the shipped lists in a directory, stricter than loading: required
    keys, known values, evidence for every entry, no name twice, no shared host blocked, and
    nothing blocked by default that breaks something."""
    errors: list[str] = []
    seen: dict[str, str] = {}
    for path in list_files([directory]):
        errors.extend(_validate_file(path, seen))
    return errors


def _validate_file(path: Path, seen: dict[str, str]) -> list[str]:
    where = str(path)
    if path.suffix != ".yaml":
        return [f"{where}: shipped lists are .yaml files"]
    try:
        text = path.read_text(encoding="utf-8")
        node = yamlio.compose(text)
        document = yamlio.load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return [f"{where}: not valid YAML: {exc}"]
    if not isinstance(document, dict) or not isinstance(node, yaml.MappingNode):
        return [f"{where}: a list must be a mapping"]
    errors = [f"{where}: unknown key {key!r}" for key in document if key not in LIST_KEYS]
    errors += [f"{where}: missing `{key}`" for key in SHIPPED_REQUIRED if key not in document]
    name = str(document.get("name", ""))
    if not LIST_NAME.fullmatch(name):
        errors.append(f"{where}: name {name!r} is not lower-case letters, digits and dashes")
    if name != path.stem:
        errors.append(f"{where}: name {name!r} differs from the file name {path.stem!r}")
    action = document.get("action")
    if action not in ("block", "watch"):
        errors.append(f"{where}: action {action!r} is not block or watch")
    default = parse_switch(document.get("default"))
    if default is None:
        errors.append(f"{where}: default {document.get('default')!r} is not on or off")
    homepage = document.get("homepage")
    if not isinstance(homepage, str) or (homepage and not homepage.startswith("https://")):
        errors.append(f"{where}: homepage {homepage!r} is not an https:// address")
    if not str(document.get("description") or "").strip():
        errors.append(f"{where}: description is empty")
    domains = document.get("domains")
    if not isinstance(domains, list):
        return [*errors, f"{where}: `domains` must be a list"]
    lines = _item_lines(node)
    for index, entry in enumerate(domains):
        at = f"{where}:{lines[index]}" if index < len(lines) else where
        entry_action = entry.get("action", action) if isinstance(entry, dict) else action
        errors.extend(
            _validate_entry(entry, at, name, entry_action, default is True and action == "block")
        )
        if isinstance(entry, dict) and isinstance(entry.get("domain"), str):
            domain = entry["domain"]
            if domain in seen:
                errors.append(f"{at}: {domain} is also on the {seen[domain]} list")
            seen.setdefault(domain, name)
    return errors


def _item_lines(node: yaml.MappingNode) -> list[int]:
    for key, value in node.value:
        if key.value == "domains" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _validate_entry(
    entry: Any, at: str, list_name: str, action: Any, blocked_by_default: bool
) -> list[str]:
    if not isinstance(entry, dict):
        return [f"{at}: an entry must be a mapping with `domain`, `purpose`, `breaks`, `evidence`"]
    errors = [f"{at}: unknown key {key!r}" for key in entry if key not in SHIPPED_ENTRY_KEYS]
    errors += [f"{at}: missing `{key}`" for key in ENTRY_REQUIRED if not entry.get(key)]
    domain = entry.get("domain")
    try:
        if not isinstance(domain, str) or normalize_domain(domain).decode() != domain:
            raise ValueError
    except ValueError:
        errors.append(f"{at}: {domain!r} is not a lower-case domain name without a final dot")
        return errors
    if "." not in domain:
        errors.append(f"{at}: {domain} is a whole top-level domain")
    match = entry.get("match", "subtree")
    if match not in ("subtree", "exact"):
        errors.append(f"{at}: match {match!r} is not subtree or exact")
    if action not in ("block", "watch"):
        errors.append(f"{at}: action {action!r} is not block or watch")
    if entry.get("purpose") not in PURPOSES:
        errors.append(f"{at}: purpose {entry.get('purpose')!r} is not one of {', '.join(PURPOSES)}")
    breaks = entry.get("breaks")
    if breaks not in BREAKS:
        errors.append(f"{at}: breaks {breaks!r} is not one of {', '.join(BREAKS)} (quote it)")
    if "verified" in entry and entry["verified"] is not False:
        errors.append(f"{at}: write `verified: false` for an unverified name, or nothing")
    for key in ("evidence", "note"):
        if key in entry and not isinstance(entry[key], str):
            errors.append(f"{at}: {key} must be text")
    if action == "block":
        if breaks == "yes":
            errors.append(f"{at}: {domain} breaks its tool when blocked; watch it instead")
        if blocked_by_default and breaks != "no":
            errors.append(f"{at}: {domain} is blocked by default but breaks {breaks!r}")
        for shared in SHARED_INFRASTRUCTURE:
            sample = shared.replace("*", "any-name", 1)
            if _covers(domain, match == "exact", sample):
                errors.append(f"{at}: blocking {domain} blocks shared {shared} ({list_name})")
    return errors
