"""The rules the shipped lists follow, stricter than loading: `validate_catalogue`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aidns.resolver import yamlio
from aidns.resolver.procinfo.tools import TOOLS_FILE, load_tools
from aidns.resolver.rules.catalogue import LIST_NAME
from aidns.resolver.rules.lists import domain_covers, list_files, normalize_domain
from aidns.resolver.rules.yamllists import LIST_KEYS, parse_switch, tool_names

PURPOSES = (
    "telemetry",
    "analytics",
    "crash",
    "update",
    "model-registry",
    "license",
    "cloud-inference",
    "core-service",
    "encrypted-dns",  # a resolver a program may use to go around aidns
)
BREAKS = ("no", "partial", "yes")
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
    "tools",
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
    "cloudflare-dns.com",  # a DoH resolver on Statsig's domain list, and many others' resolver
    "resources.jetbrains.com",  # JetBrains IDEs' shared configuration host
)


def validate_catalogue(directory: Path) -> list[str]:
    """Everything wrong with the shipped lists in a directory, stricter than loading: required
    keys, known values, evidence for every entry, no name twice, no shared host blocked, and
    nothing blocked by default that breaks something, and every tool an entry names is in the
    directory's tools.yaml."""
    catalogue = load_tools([directory / TOOLS_FILE])
    errors = list(catalogue.problems)
    known = {tool.name for tool in catalogue.tools}
    seen: dict[str, str] = {}
    for path in list_files([directory]):
        errors.extend(_validate_file(path, seen, known))
    return errors


def _tool_errors(value: Any, at: str, known: set[str]) -> list[str]:
    try:
        names = tool_names(value)
    except ValueError as exc:
        return [f"{at}: {exc}"]
    return [
        f"{at}: tools: {name!r} is not a tool in tools.yaml" for name in names if name not in known
    ]


def _validate_file(path: Path, seen: dict[str, str], known: set[str]) -> list[str]:
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
    errors += _tool_errors(document.get("tools"), where, known)
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
        if isinstance(entry, dict) and "tools" in entry:
            errors += _tool_errors(entry["tools"], at, known)
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
            if domain_covers(domain, match == "exact", sample):
                errors.append(f"{at}: blocking {domain} blocks shared {shared} ({list_name})")
    return errors
