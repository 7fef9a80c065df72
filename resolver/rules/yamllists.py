"""aidns's own YAML lists: a name, a description, an action, and entries that say why.

Anchors and aliases are refused (yamlio), and a list over its size or entry limit is refused
whole, like a text list.
"""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any

import yaml

from aidns.resolver import yamlio
from aidns.resolver.config import ListLimits
from aidns.resolver.errors import ListError, excerpt
from aidns.resolver.rules.lists import (
    BIG_LIST_ENTRIES,
    DomainList,
    ListAction,
    Rule,
    normalize_domain,
)
from aidns.resolver.rules.parsers import NO_MORE_THAN_DEFAULT, read_limited_list, too_many

LIST_KEYS = {
    "name",
    "description",
    "homepage",
    "action",
    "default",
    "tools",
    "domains",
    "block_ttl",
}
LONGEST_BLOCK_TTL_S = 7 * 86400
ENTRY_KEYS = {
    "domain",
    "match",
    "action",
    "purpose",
    "breaks",
    "evidence",
    "verified",
    "note",
    "tools",
}


def _entry_lines(text: str) -> list[int]:
    """Line numbers of the items of `domains:`, only computed when an entry is bad."""
    node = yamlio.compose(text)
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if key.value == "domains" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


_SWITCH = {True: True, False: False, "on": True, "off": False, "yes": True, "no": False}


def parse_switch(value: Any) -> bool | None:
    """`on`/`off` as YAML 1.1 reads them (booleans), or as quoted strings; None if neither."""
    key = value.lower() if isinstance(value, str) else value
    return _SWITCH.get(key) if isinstance(key, bool | str) else None


def load_yaml_list(path: Path, limits: ListLimits = NO_MORE_THAN_DEFAULT) -> DomainList:
    """A curated list: `name`, `description`, `action`, `domains` (names or mappings)."""
    text = read_limited_list(path, limits).decode("utf-8", "replace")
    try:
        document = yamlio.load(text)
    except yaml.YAMLError as exc:
        raise yamlio.error(exc, path, ListError) from None
    source = str(path)
    if not isinstance(document, dict):
        raise ListError("a list file must be a mapping with `name` and `domains`", source=source)
    unknown = sorted(set(map(str, document)) - LIST_KEYS)
    if unknown:
        raise ListError(
            f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(LIST_KEYS))}",
            source=source,
        )
    try:
        action = ListAction(str(document.get("action", "block")).lower())
    except ValueError:
        raise ListError(
            f"action: {excerpt(document.get('action'))} is not block, watch or allow", source=source
        ) from None
    domains = document.get("domains")
    if not isinstance(domains, list):
        raise ListError("`domains` must be a list of names", source=source)
    if len(domains) > limits.max_entries:
        raise too_many(path, limits)
    default = parse_switch(document.get("default", "on"))
    if default is None:
        raise ListError(
            f"default: {excerpt(document.get('default'))} is not on or off", source=source
        )
    block_ttl = document.get("block_ttl")
    if block_ttl is not None and (
        isinstance(block_ttl, bool)
        or not isinstance(block_ttl, int)
        or not 0 <= block_ttl <= LONGEST_BLOCK_TTL_S
    ):
        raise ListError(
            f"block_ttl: {excerpt(block_ttl)} is not a number of seconds from 0 to "
            f"{LONGEST_BLOCK_TTL_S}",
            source=source,
        )
    try:
        tools = tool_names(document.get("tools"))
    except ValueError as exc:
        raise ListError(str(exc), source=source) from None
    domain_list = DomainList(
        name=str(document.get("name") or path.stem),
        action=action,
        source=source,
        description=" ".join(str(document.get("description") or "").split()),
        enabled=default,
        homepage=str(document.get("homepage") or ""),
        enabled_by_default=default,
        block_ttl_s=block_ttl,
        tools=tools,
    )
    lines: list[int] | None = None
    for index, item in enumerate(domains):
        try:
            domain_list.rules.append(_rule_from_entry(item, domain_list))
        except ValueError as exc:
            if lines is None:
                lines = _entry_lines(text)
            where = f"{source}:{lines[index]}" if index < len(lines) else source
            domain_list.note_problem(f"{where}: {exc}")
    if len(domain_list.rules) >= BIG_LIST_ENTRIES:
        _rules_to_hashes(domain_list)
    return domain_list


_BREAKS = {False: "no", True: "yes"}


def tool_names(value: Any) -> tuple[str, ...]:
    """A `tools:` value: a list of tool names (tools.yaml's), or nothing."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"tools: {excerpt(value)} is not a list of tool names")
    return tuple(value)


def _rule_from_entry(item: Any, domain_list: DomainList) -> Rule:
    if isinstance(item, str):
        exact = item.startswith("=")
        return Rule(
            normalize_domain(item.lstrip("=")).decode(),
            domain_list.action,
            domain_list.name,
            exact,
            tools=domain_list.tools,
        )
    if not isinstance(item, dict) or "domain" not in item:
        raise ValueError(f"an entry must be a name or a mapping with `domain`, not {excerpt(item)}")
    unknown = sorted(set(map(str, item)) - ENTRY_KEYS)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} in entry for {excerpt(item['domain'])}"
        )
    match = str(item.get("match", "subtree")).lower()
    if match not in ("subtree", "exact"):
        raise ValueError(f"match: {excerpt(match)} is not subtree or exact")
    try:
        action = ListAction(str(item.get("action", domain_list.action)).lower())
    except ValueError:
        raise ValueError(
            f"action: {excerpt(item.get('action'))} is not block, watch or allow"
        ) from None
    breaks = item.get("breaks", "")
    return Rule(
        domain=normalize_domain(str(item["domain"])).decode(),
        action=action,
        list_name=domain_list.name,
        exact=match == "exact",
        purpose=str(item.get("purpose", "")),
        breaks=_BREAKS.get(breaks, str(breaks)) if isinstance(breaks, bool) else str(breaks),
        evidence=" ".join(str(item.get("evidence", "")).split()),
        verified=item.get("verified", True) is not False,
        note=" ".join(str(item.get("note", "")).split()),
        tools=tool_names(item["tools"]) if "tools" in item else domain_list.tools,
    )


def _rules_to_hashes(domain_list: DomainList) -> None:
    """A big YAML list keeps only the hashes of the rules that take the list's own action."""
    own = [r for r in domain_list.rules if r.action is domain_list.action]
    domain_list.subtree_hashes = array(
        "q", sorted({hash(r.domain.encode()) for r in own if not r.exact})
    )
    domain_list.exact_hashes = array("q", sorted({hash(r.domain.encode()) for r in own if r.exact}))
    domain_list.rules = [r for r in domain_list.rules if r.action is not domain_list.action]
