"""Block, watch and allow lists: reading list files, and the matcher that decides a name.

Names are kept as the hashes of their lower-case dotted bytes, not as strings: a million
rules cost 8 MB in a sorted array instead of about 100 MB in a set, and a lookup is one
dict probe plus one binary search per label of the queried name.
"""

from __future__ import annotations

import logging
import re
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from aidns.resolver.errors import ListError
from aidns.resolver.query import Action, Decision

log = logging.getLogger(__name__)

try:
    _YamlLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _YamlLoader = yaml.SafeLoader

BIG_LIST_ENTRIES = 2000
NOT_LISTS = {"tools.yaml"}  # the catalogue of AI tools lives beside the lists
PROBLEMS_SHOWN = 5

_LABEL = rb"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DOMAIN = re.compile(rb"(?:%s\.)*%s" % (_LABEL, _LABEL))
_TEXT_LINE = re.compile(rb"^[ \t]*(=?)(%s)\.?[ \t]*(?:#.*)?$" % _DOMAIN.pattern, re.M)
_IGNORED_LINE = re.compile(rb"^[ \t]*(?:#.*)?$", re.M)


class ListAction(StrEnum):
    BLOCK = "block"
    WATCH = "watch"
    ALLOW = "allow"


_VERDICT = {
    ListAction.BLOCK: Action.BLOCKED,
    ListAction.WATCH: Action.WATCHED,
    ListAction.ALLOW: Action.ALLOWED,
}
_PRIORITY = {ListAction.ALLOW: 0, ListAction.BLOCK: 1, ListAction.WATCH: 2}

LIST_KEYS = {"name", "description", "homepage", "action", "default", "domains"}
ENTRY_KEYS = {"domain", "match", "purpose", "breaks", "evidence", "verified", "note"}


def normalize_domain(text: str) -> bytes:
    """Lower-case ASCII (IDNA for non-ASCII), no trailing dot; ValueError if not a name."""
    name = text.strip().rstrip(".").lower()
    try:
        wire = name.encode("ascii")
    except UnicodeEncodeError:
        try:
            wire = name.encode("idna")
        except UnicodeError as exc:
            raise ValueError(f"{text!r} is not a domain name ({exc})") from None
    if len(wire) > 253 or not _DOMAIN.fullmatch(wire):
        raise ValueError(f"{text!r} is not a domain name")
    return wire


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

    def __len__(self) -> int:
        return len(self.rules) + len(self.subtree_hashes) + len(self.exact_hashes)

    def note_problem(self, message: str) -> None:
        self.skipped += 1
        if len(self.problems) < PROBLEMS_SHOWN:
            self.problems.append(message)


def load_list(path: Path) -> DomainList:
    """Read a .yaml/.yml or .txt list file; raises ListError when nothing usable is in it."""
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return load_yaml_list(path)
    if suffix in (".txt", ".list"):
        return load_text_list(path)
    raise ListError(f"unknown list format {suffix!r} (use .yaml or .txt)", source=str(path))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ListError(f"cannot read: {exc.strerror}", source=str(path)) from None


def load_text_list(path: Path, action: ListAction = ListAction.BLOCK) -> DomainList:
    """One name a line, `#` comments, `=name` for exact; bad lines are skipped and counted."""
    data = _read_bytes(path).lower()
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if data and not data.endswith(b"\n"):
        data += b"\n"
    domain_list = DomainList(name=path.stem, action=action, source=str(path))
    subtree: array[int] = array("q")
    exact: list[bytes] = []
    small_names: list[bytes] = []
    first_line = 1
    for chunk in _chunks(data):
        if _CLEAN_CHUNK.fullmatch(chunk) and not any(bad in chunk for bad in _BAD_SEQUENCES):
            names = chunk.split()
        else:
            names = _parse_lines(chunk, first_line, domain_list, exact)
        subtree.extend(map(hash, names))
        if len(small_names) < BIG_LIST_ENTRIES:
            small_names.extend(names[:BIG_LIST_ENTRIES])
        first_line += chunk.count(b"\n") - 1
    if len(subtree) + len(exact) < BIG_LIST_ENTRIES:
        _hashes_to_rules(domain_list, small_names, exact)
    else:
        domain_list.subtree_hashes = array("q", sorted(subtree))
        domain_list.exact_hashes = array("q", sorted(map(hash, exact)))
    return domain_list


_CHUNK_BYTES = 1 << 20
_CLEAN_CHUNK = re.compile(rb"[a-z0-9_.\n-]*")
_BAD_SEQUENCES = (b"..", b"\n.", b".\n", b"\n-", b"-\n", b".-", b"-.")


def _chunks(data: bytes) -> Iterable[bytes]:
    """Slices of about 1 MB ending at a line break, so parsing never holds a million objects."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start + _CHUNK_BYTES)
        end = len(data) if end < 0 else end + 1
        yield b"\n" + data[start:end]
        start = end


def _parse_lines(
    chunk: bytes, first_line: int, domain_list: DomainList, exact: list[bytes]
) -> list[bytes]:
    """The slow path for chunks with comments, exact rules or bad lines."""
    names: list[bytes] = []
    for number, line in enumerate(chunk.split(b"\n")[1:], start=first_line):
        found = _TEXT_LINE.fullmatch(line)
        if found is None:
            if not _IGNORED_LINE.fullmatch(line):
                shown = line.strip().decode("utf-8", "replace")[:80]
                domain_list.note_problem(
                    f"{domain_list.source}:{number}: not a domain name: {shown!r}"
                )
            continue
        (exact if found.group(1) else names).append(found.group(2))
    return names


def _hashes_to_rules(domain_list: DomainList, subtree: list[bytes], exact: list[bytes]) -> None:
    """Small lists keep their names, so `check` and the log can show them."""
    for names, is_exact in ((subtree, False), (exact, True)):
        for name in dict.fromkeys(names):
            domain_list.rules.append(
                Rule(name.decode(), domain_list.action, domain_list.name, exact=is_exact)
            )
    domain_list.subtree_hashes = array("q")
    domain_list.exact_hashes = array("q")


def _yaml_error(path: Path, exc: yaml.YAMLError) -> ListError:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    return ListError(f"not valid YAML: {problem}", source=str(path), line=line)


def _entry_lines(text: str) -> list[int]:
    """Line numbers of the items of `domains:`, only computed when an entry is bad."""
    node = yaml.compose(text, Loader=_YamlLoader)
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if key.value == "domains" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def load_yaml_list(path: Path) -> DomainList:
    """A curated list: `name`, `description`, `action`, `domains` (names or mappings)."""
    text = _read_bytes(path).decode("utf-8", "replace")
    try:
        document = yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
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
            f"action: {document.get('action')!r} is not block, watch or allow", source=source
        ) from None
    domains = document.get("domains")
    if not isinstance(domains, list):
        raise ListError("`domains` must be a list of names", source=source)
    default = document.get("default", "on")
    domain_list = DomainList(
        name=str(document.get("name") or path.stem),
        action=action,
        source=source,
        description=str(document.get("description") or ""),
        enabled=default not in (False, "off", "no"),
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


def _rule_from_entry(item: Any, domain_list: DomainList) -> Rule:
    if isinstance(item, str):
        exact = item.startswith("=")
        return Rule(
            normalize_domain(item.lstrip("=")).decode(), domain_list.action, domain_list.name, exact
        )
    if not isinstance(item, dict) or "domain" not in item:
        raise ValueError(f"an entry must be a name or a mapping with `domain`, not {item!r}")
    unknown = sorted(set(map(str, item)) - ENTRY_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} in entry for {item['domain']!r}")
    match = str(item.get("match", "subtree")).lower()
    if match not in ("subtree", "exact"):
        raise ValueError(f"match: {match!r} is not subtree or exact")
    return Rule(
        domain=normalize_domain(str(item["domain"])).decode(),
        action=domain_list.action,
        list_name=domain_list.name,
        exact=match == "exact",
        purpose=str(item.get("purpose", "")),
        breaks=str(item.get("breaks", "")),
        evidence=str(item.get("evidence", "")),
        verified=item.get("verified", True) is not False,
    )


def _rules_to_hashes(domain_list: DomainList) -> None:
    domain_list.subtree_hashes = array(
        "q", sorted({hash(r.domain.encode()) for r in domain_list.rules if not r.exact})
    )
    domain_list.exact_hashes = array(
        "q", sorted({hash(r.domain.encode()) for r in domain_list.rules if r.exact})
    )
    domain_list.rules = []


def list_files(directories: Iterable[Path]) -> list[Path]:
    """The list files in each directory, in name order; later directories may override by name."""
    files: list[Path] = []
    for directory in directories:
        if directory.is_dir():
            files.extend(
                sorted(
                    p
                    for p in directory.iterdir()
                    if p.suffix.lower() in (".yaml", ".yml", ".txt", ".list")
                    and p.name not in NOT_LISTS
                )
            )
    return files


def load_lists(directories: Iterable[Path]) -> tuple[list[DomainList], list[str]]:
    """Every list in the directories; a list with the same name in a later directory replaces it."""
    by_name: dict[str, DomainList] = {}
    errors: list[str] = []
    for path in list_files(directories):
        try:
            loaded = load_list(path)
        except ListError as exc:
            errors.append(str(exc))
            continue
        errors.extend(loaded.problems)
        if loaded.skipped > len(loaded.problems):
            errors.append(f"{loaded.source}: {loaded.skipped} bad entries skipped in all")
        by_name[loaded.name] = loaded
    return list(by_name.values()), errors


BUCKET_BITS = 16
_BUCKET_SHIFT = 64 - BUCKET_BITS
_BUCKET_OFFSET = 1 << (BUCKET_BITS - 1)  # hashes are signed


class _Segment:
    """A big list's sorted hashes, with where each run of equal top bits starts, so a search
    touches a few neighbouring entries instead of twenty scattered ones."""

    __slots__ = ("action", "hashes", "list_name", "starts")

    def __init__(self, hashes: array[int], action: ListAction, list_name: str):
        self.hashes = hashes
        self.action = action
        self.list_name = list_name
        self.starts = array(
            "I",
            (
                bisect_left(hashes, (bucket - _BUCKET_OFFSET) << _BUCKET_SHIFT)
                for bucket in range((1 << BUCKET_BITS) + 1)
            ),
        )


FILTER_BITS = 1 << 25  # 4 MB; about 3% of misses reach the binary search with a million rules
_FILTER_MASK = FILTER_BITS // 8 - 1


class DomainMatcher:
    """Decides a name against every enabled list: allow beats block, block beats watch.

    Small lists live in dicts keyed by the name's hash. Big lists are sorted hash arrays,
    searched only when a bit filter over all of them says the name may be there.
    """

    def __init__(self, lists: Sequence[DomainList] = ()) -> None:
        self._subtree: dict[int, Rule] = {}
        self._exact: dict[int, Rule] = {}
        self._subtree_segments: list[_Segment] = []
        self._exact_segments: list[_Segment] = []
        self._filter = bytearray()
        self._strongest_rank = _PRIORITY[ListAction.BLOCK]
        self.rule_count = 0
        for domain_list in lists:
            if domain_list.enabled:
                self._add(domain_list)
        for segments in (self._subtree_segments, self._exact_segments):
            segments.sort(key=lambda s: _PRIORITY[s.action])
        self._build_filter()

    def _add(self, domain_list: DomainList) -> None:
        if domain_list.action is ListAction.ALLOW or any(
            r.action is ListAction.ALLOW for r in domain_list.rules
        ):
            self._strongest_rank = _PRIORITY[ListAction.ALLOW]
        for rule in domain_list.rules:
            table = self._exact if rule.exact else self._subtree
            key = hash(rule.domain.encode())
            held = table.get(key)
            if held is None or _PRIORITY[rule.action] < _PRIORITY[held.action]:
                table[key] = rule
        if domain_list.subtree_hashes:
            self._subtree_segments.append(
                _Segment(domain_list.subtree_hashes, domain_list.action, domain_list.name)
            )
        if domain_list.exact_hashes:
            self._exact_segments.append(
                _Segment(domain_list.exact_hashes, domain_list.action, domain_list.name)
            )
        self.rule_count += len(domain_list)

    def _build_filter(self) -> None:
        segments = self._subtree_segments + self._exact_segments
        if not segments:
            return
        bits = bytearray(FILTER_BITS // 8)
        mask = _FILTER_MASK
        for segment in segments:
            for key in segment.hashes:
                bits[(key >> 3) & mask] |= 1 << (key & 7)
        self._filter = bits

    def _search(self, segments: list[_Segment], key: int) -> _Segment | None:
        if not self._filter[(key >> 3) & _FILTER_MASK] & (1 << (key & 7)):
            return None
        bucket = (key >> _BUCKET_SHIFT) + _BUCKET_OFFSET
        for segment in segments:
            hashes = segment.hashes
            end = segment.starts[bucket + 1]
            index = bisect_left(hashes, key, segment.starts[bucket], end)
            if index < end and hashes[index] == key:
                return segment
        return None

    def decide(self, qname: bytes) -> Decision | None:
        """The strongest rule for a lower-case dotted name, or None when no list names it."""
        best: Decision | None = None
        rank = 3
        key = hash(qname)
        rule = self._exact.get(key)
        if rule is not None:
            best, rank = (
                Decision(_VERDICT[rule.action], rule.text, rule.list_name),
                _PRIORITY[rule.action],
            )
        if self._exact_segments:
            segment = self._search(self._exact_segments, key)
            if segment is not None and _PRIORITY[segment.action] < rank:
                rank = _PRIORITY[segment.action]
                best = Decision(_VERDICT[segment.action], "=" + qname.decode(), segment.list_name)
        subtree = self._subtree
        segments = self._subtree_segments
        start = 0
        while True:
            suffix = qname[start:] if start else qname
            key = hash(suffix)
            rule = subtree.get(key)
            if rule is not None and _PRIORITY[rule.action] < rank:
                rank = _PRIORITY[rule.action]
                best = Decision(_VERDICT[rule.action], rule.text, rule.list_name)
            if segments:
                segment = self._search(segments, key)
                if segment is not None and _PRIORITY[segment.action] < rank:
                    rank = _PRIORITY[segment.action]
                    best = Decision(_VERDICT[segment.action], suffix.decode(), segment.list_name)
            if rank <= self._strongest_rank:
                return best
            dot = qname.find(b".", start)
            if dot < 0:
                return best
            start = dot + 1

    def rule_for(self, name: str) -> Rule | None:
        """The catalogue entry behind a small-list rule text, for `check` and the log."""
        exact = name.startswith("=")
        key = hash(name.lstrip("=").encode())
        return (self._exact if exact else self._subtree).get(key)
