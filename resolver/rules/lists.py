"""The list model: a list, its rules, its action, and what a domain name is.

Names are kept as the hashes of their lower-case dotted bytes, not as strings: a million
rules cost 8 MB in a sorted array instead of about 100 MB in a set. A list holds its names
as Rule objects while it is small, and as sorted hash arrays once it is big; parsers.py
reads the files and matcher.py decides a name against the lists.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from aidns.resolver.errors import excerpt

BIG_LIST_ENTRIES = 2000
NOT_LISTS = {"tools.yaml"}  # the catalogue of AI tools lives beside the lists
PROBLEMS_SHOWN = 5
YAML_SUFFIXES = (".yaml", ".yml")
TEXT_SUFFIXES = (".txt", ".list", ".hosts")
# Written by `aidns lists add` beside a list it fetched or copied: where it came from, and
# for a text list, which has no header of its own, its action.
SOURCE_SUFFIX = ".source.json"

_LABEL = rb"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
DOMAIN_PATTERN = re.compile(rb"(?:%s\.)*%s" % (_LABEL, _LABEL))

# What hosts files say about the machine itself; never a rule, whatever the format.
LOCAL_NAMES = frozenset(
    {
        b"localhost",
        b"localhost.localdomain",
        b"localhost4",
        b"localhost4.localdomain4",
        b"localhost6",
        b"localhost6.localdomain6",
        b"local",
        b"broadcasthost",
        b"ip6-localhost",
        b"ip6-loopback",
        b"ip6-localnet",
        b"ip6-mcastprefix",
        b"ip6-allnodes",
        b"ip6-allrouters",
        b"ip6-allhosts",
        b"0.0.0.0",
    }
)


class ListAction(StrEnum):
    BLOCK = "block"
    WATCH = "watch"
    ALLOW = "allow"


ACTION_PRIORITY = {ListAction.ALLOW: 0, ListAction.BLOCK: 1, ListAction.WATCH: 2}


def normalize_domain(text: str) -> bytes:
    """Lower-case ASCII (IDNA for non-ASCII), no trailing dot; ValueError if not a name."""
    name = text.strip().rstrip(".").lower()
    if any("\udc80" <= c <= "\udcff" for c in name):  # bytes the command line could not decode
        shown = repr(text.encode("utf-8", "surrogateescape"))[:80]
        raise ValueError(f"{shown} is not a domain name: it holds bytes that are not UTF-8")
    try:
        wire = name.encode("ascii")
    except UnicodeEncodeError:
        try:
            wire = name.encode("idna")
        except UnicodeError:
            raise ValueError(
                f"{excerpt(text)} is not a domain name: it holds characters that an "
                "internationalized name (IDNA) can't"
            ) from None
    if len(wire) > 253 or not DOMAIN_PATTERN.fullmatch(wire):
        raise ValueError(f"{excerpt(text)} is not a domain name: {_why_not_a_name(wire)}")
    return wire


def _why_not_a_name(wire: bytes) -> str:
    if not wire:
        return "it is empty"
    if len(wire) > 253:
        return f"it is {len(wire)} characters long, and a name has at most 253"
    for label in wire.split(b"."):
        if not label:
            return "it has an empty label (a leading dot, or two dots in a row)"
        if len(label) > 63:
            return (
                f"its label {label[:16].decode()}… has {len(label)} characters, "
                "and a label has at most 63"
            )
        if label.startswith(b"-") or label.endswith(b"-"):
            return f"its label {excerpt(label.decode(), 40)} starts or ends with a hyphen"
    odd = sorted({chr(c) for c in wire if not (chr(c).isalnum() or chr(c) in "._-")})
    return f"it holds {', '.join(map(repr, odd[:3]))}, which a name can't"


@dataclass(frozen=True, slots=True)
class Rule:
    """One name on one list, with what the catalogue knows about it."""

    domain: str
    action: ListAction
    list_name: str
    exact: bool = False
    purpose: str = ""
    breaks: str = ""
    evidence: str = ""
    verified: bool = True
    note: str = ""
    tools: tuple[str, ...] = ()  # the tools (tools.yaml names) this entry is evidence for

    @property
    def text(self) -> str:
        return f"={self.domain}" if self.exact else self.domain


@dataclass(slots=True)
class DomainList:
    """A list file as loaded: its metadata and either Rule objects or, for big lists, hashes."""

    name: str
    action: ListAction
    source: str
    description: str = ""
    enabled: bool = True
    rules: list[Rule] = field(default_factory=list)
    subtree_hashes: array[int] = field(default_factory=lambda: array("q"))
    exact_hashes: array[int] = field(default_factory=lambda: array("q"))
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    homepage: str = ""
    enabled_by_default: bool = True
    block_ttl_s: int | None = None  # the sinkhole's TTL for this list's names, if not block_ttl
    tools: tuple[str, ...] = ()  # the tools an entry names when it names none itself

    def __len__(self) -> int:
        return len(self.rules) + len(self.subtree_hashes) + len(self.exact_hashes)

    def note_problem(self, message: str) -> None:
        self.skipped += 1
        if len(self.problems) < PROBLEMS_SHOWN:
            self.problems.append(message)

    def actions(self) -> list[ListAction]:
        """The actions its entries take: the list's own, and any an entry sets for itself."""
        found = {rule.action for rule in self.rules}
        if self.subtree_hashes or self.exact_hashes or not found:
            found.add(self.action)
        return sorted(found, key=ACTION_PRIORITY.__getitem__)


def source_path(list_path: Path) -> Path:
    """The sidecar `aidns lists add` writes beside a list it installed."""
    return list_path.with_name(list_path.stem + SOURCE_SUFFIX)


def source_action(list_path: Path) -> ListAction:
    """A text list's action from its sidecar; block when it has none."""
    try:
        meta = json.loads(source_path(list_path).read_text(encoding="utf-8"))
        return ListAction(str(meta.get("action", "block")))
    except (OSError, ValueError, AttributeError):
        return ListAction.BLOCK


def read_source(list_path: Path) -> dict[str, Any]:
    """The sidecar `aidns lists add` wrote beside a list; {} when there is none."""
    try:
        meta = json.loads(source_path(list_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def list_files(directories: Iterable[Path]) -> list[Path]:
    """The list files in each directory, in name order; later directories may override by name."""
    files: list[Path] = []
    for directory in directories:
        if directory.is_dir():
            files.extend(
                sorted(
                    p
                    for p in directory.iterdir()
                    if p.suffix.lower() in (*YAML_SUFFIXES, *TEXT_SUFFIXES)
                    and p.name not in NOT_LISTS
                    and not p.name.startswith(".")
                )
            )
    return files


def domain_covers(domain: str, exact: bool, name: str) -> bool:
    """Whether a rule for `domain` (exactly, or it and every name below) names `name`."""
    return name == domain or (not exact and name.endswith("." + domain))
