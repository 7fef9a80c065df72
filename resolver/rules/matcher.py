"""The matcher: every enabled rule compiled into one buffer of sorted hashes, and its lookups.

The buffer is what a rule snapshot file holds (see snapshot.py): the keeper compiles lists
into it, and the server maps it with `mmap`, so taking new rules costs no parse and no copy.
A lookup is a bit-filter probe and, rarely, one binary search per label of the name. Layout,
all integers little-endian and every array 8-byte aligned:

    b"AIDNSNP1"  u32 meta length  meta (JSON)  padding  arrays...

The meta names each array by (offset, count). Rules fall into six classes, (allow, block,
watch) x (exact, subtree), each a sorted int64 array of name hashes, the number of the list
most of them come from, and the (few) hashes another list names, sorted, with that list's
uint16 number. A bit filter over every hash
turns most misses away before any search. Hashes are Python's `hash()` of the name, so a
snapshot only holds for processes that share the hash seed; `fingerprint` checks that.
"""

from __future__ import annotations

import itertools
import json
import mmap
import struct
import sys
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from aidns.resolver.errors import AidnsError
from aidns.resolver.query import Action, Decision
from aidns.resolver.rules.lists import DomainList, ListAction

MAGIC = b"AIDNSNP1"
MAX_LISTS = 65535  # list numbers are uint16
BUCKET_BITS = 16
BUCKETED_FROM = 4096  # smaller arrays are searched whole
_BUCKET_SHIFT = 64 - BUCKET_BITS
_BUCKET_OFFSET = 1 << (BUCKET_BITS - 1)  # hashes are signed
_HASH_OFFSET = 1 << 63
FILTER_MIN_BYTES = 1 << 13
FILTER_MAX_BYTES = 1 << 22  # 4 MB: about 3% of misses reach a search with a million rules
FILTER_BITS_PER_RULE = 32

ORDER = (ListAction.ALLOW, ListAction.BLOCK, ListAction.WATCH)  # strongest first
VERDICT = {
    ListAction.BLOCK: Action.BLOCKED,
    ListAction.WATCH: Action.WATCHED,
    ListAction.ALLOW: Action.ALLOWED,
}
if sys.byteorder != "little":  # pragma: no cover
    raise ImportError("rule snapshots are written little-endian")


def fingerprint() -> int:
    """What this process's hash seed makes of a fixed name: equal only under the same seed."""
    return hash(b"aidns rule snapshot")


def _class_key(action: ListAction, exact: bool) -> str:
    return f"{action}:{'exact' if exact else 'subtree'}"


def _merge(
    members: list[tuple[int, array[int]]],
) -> tuple[array[int], int, array[int], array[int]]:
    """One sorted array from several lists' sorted hashes, the list most of them come from,
    and the (sorted) keys that name another list with that list's number: a name on several
    lists is named by the first."""
    base, base_keys = max(members, key=lambda member: (len(member[1]), -member[0]))
    if len(members) == 1:
        return base_keys, base, array("q"), array("H")
    keys = array("q", sorted(itertools.chain.from_iterable(h for _, h in members)))
    named: dict[int, int] = {}
    for number, hashes in members:
        if number == base:
            continue
        for key in hashes:
            if key in named:
                continue
            if number > base:
                at = bisect_left(base_keys, key)
                if at < len(base_keys) and base_keys[at] == key:
                    continue
            named[key] = number
    ordered = sorted(named)
    return keys, base, array("q", ordered), array("H", (named[key] for key in ordered))


def _starts(keys: array[int]) -> array[int] | None:
    if len(keys) < BUCKETED_FROM:
        return None
    return array(
        "I",
        (
            bisect_left(keys, (bucket - _BUCKET_OFFSET) << _BUCKET_SHIFT)
            for bucket in range((1 << BUCKET_BITS) + 1)
        ),
    )


def _filter(classes: Iterable[array[int]], count: int) -> bytearray:
    size = FILTER_MIN_BYTES
    while size < FILTER_MAX_BYTES and size * 8 < count * FILTER_BITS_PER_RULE:
        size *= 2
    bits = bytearray(size)
    mask = size - 1
    for keys in classes:
        for key in keys:
            bits[(key >> 3) & mask] |= 1 << (key & 7)
    return bits


def compile_snapshot(
    lists: Sequence[DomainList], generation: int, meta: dict[str, Any] | None = None
) -> bytes:
    """The snapshot of the enabled lists, in list order, with `meta` carried along."""
    enabled = [domain_list for domain_list in lists if domain_list.enabled]
    if len(enabled) > MAX_LISTS:
        raise AidnsError(f"{len(enabled)} lists are on; at most {MAX_LISTS} can be")
    members: dict[str, list[tuple[int, array[int]]]] = {}
    for number, domain_list in enumerate(enabled):
        found: dict[str, set[int]] = {}
        for rule in domain_list.rules:
            found.setdefault(_class_key(rule.action, rule.exact), set()).add(
                hash(rule.domain.encode())
            )
        sorted_found = {key: array("q", sorted(values)) for key, values in found.items()}
        big = ((False, domain_list.subtree_hashes), (True, domain_list.exact_hashes))
        for exact, hashes in big:  # sorted by the parser already
            if hashes:
                key = _class_key(domain_list.action, exact)
                held = sorted_found.get(key)
                sorted_found[key] = hashes if held is None else array("q", sorted({*held, *hashes}))
        for key, keys in sorted_found.items():
            members.setdefault(key, []).append((number, keys))
    blobs: list[bytes] = []
    offset = 0

    def place(data: array[int] | bytearray) -> list[int]:
        nonlocal offset
        raw = data.tobytes() if isinstance(data, array) else bytes(data)
        at = offset
        blobs.append(raw + b"\0" * (-len(raw) % 8))
        offset += len(blobs[-1])
        return [at, len(data)]

    classes = []
    merged: list[array[int]] = []
    for action in ORDER:
        for exact in (True, False):
            key = _class_key(action, exact)
            if key not in members:
                continue
            keys, base, named_keys, named_numbers = _merge(members[key])
            merged.append(keys)
            starts = _starts(keys)
            classes.append(
                {
                    "action": str(action),
                    "exact": exact,
                    "keys": place(keys),
                    "list": base,
                    "named_keys": place(named_keys) if named_keys else None,
                    "named_numbers": place(named_numbers) if named_numbers else None,
                    "starts": None if starts is None else place(starts),
                }
            )
    rule_count = sum(len(domain_list) for domain_list in enabled)
    bits = _filter(merged, sum(len(keys) for keys in merged))
    described = {
        **(meta or {}),
        "generation": generation,
        "created": time.time(),
        "fingerprint": fingerprint(),
        "lists": [domain_list.name for domain_list in enabled],
        "rule_count": rule_count,
        "has_allow": any(c["action"] == str(ListAction.ALLOW) for c in classes),
        "classes": classes,
        "filter": place(bits),
    }
    head = json.dumps(described, separators=(",", ":")).encode()
    head += b" " * (-(len(MAGIC) + 4 + len(head)) % 8)
    return b"".join([MAGIC, struct.pack("<I", len(head)), head, *blobs])


class _Class:
    __slots__ = (
        "action", "exact", "keys", "named_keys", "named_numbers", "number", "rank", "starts",
        "verdict",
    )  # fmt: skip

    def __init__(self, view: memoryview, spec: dict[str, Any], base: int) -> None:
        def cut(place: list[int] | None, code: Literal["q", "H", "I"], width: int) -> Any:
            if place is None:
                return None
            at, count = place
            return view[base + at : base + at + count * width].cast(code)

        self.action = ListAction(spec["action"])
        self.exact = bool(spec["exact"])
        self.rank = ORDER.index(self.action)
        self.verdict = VERDICT[self.action]
        self.keys = cut(spec["keys"], "q", 8)
        self.named_keys = cut(spec["named_keys"], "q", 8)
        self.named_numbers = cut(spec["named_numbers"], "H", 2)
        self.number = int(spec["list"])
        self.starts = cut(spec["starts"], "I", 4)

    def find(self, key: int) -> int:
        """The number of the list that holds `key`, or -1."""
        keys = self.keys
        starts = self.starts
        if starts is None:
            low, high = 0, len(keys)
        else:
            bucket = (key >> _BUCKET_SHIFT) + _BUCKET_OFFSET
            low, high = starts[bucket], starts[bucket + 1]
        index = bisect_left(keys, key, low, high)
        if index >= high or keys[index] != key:
            return -1
        named = self.named_keys
        if named is not None:
            at = bisect_left(named, key)
            if at < len(named) and named[at] == key:
                return int(self.named_numbers[at])
        return self.number


class DomainMatcher:
    """Decides a name against a snapshot: allow beats block, block beats watch, and an exact
    rule or a longer name beats a shorter one of the same strength."""

    def __init__(
        self, lists: Sequence[DomainList] = (), *, compiled: bytes | mmap.mmap | None = None
    ) -> None:
        data = compile_snapshot(lists, generation=0) if compiled is None else compiled
        view = memoryview(data)
        if bytes(view[:8]) != MAGIC or len(view) < 12:
            raise AidnsError("not an aidns rule snapshot")
        (length,) = struct.unpack_from("<I", view, 8)
        try:
            meta = json.loads(bytes(view[12 : 12 + length]))
        except ValueError:
            raise AidnsError("a damaged rule snapshot") from None
        base = 12 + length
        self.meta: dict[str, Any] = meta
        self.generation: int = int(meta["generation"])
        self.rule_count: int = int(meta["rule_count"])
        self.list_names: list[str] = list(meta["lists"])
        classes = [_Class(view, spec, base) for spec in meta["classes"]]
        self._exact = [found for found in classes if found.exact]
        self._subtree = [found for found in classes if not found.exact]
        at, size = meta["filter"]
        self._filter = view[base + at : base + at + size]
        self._mask = size - 1
        self._strongest_rank = 0 if meta["has_allow"] else 1
        self._data = data  # keeps the mapping alive as long as the matcher

    def decide(self, qname: bytes) -> Decision | None:
        """The strongest rule for a lower-case dotted name, or None when no list names it."""
        bits = self._filter
        mask = self._mask
        names = self.list_names
        best: Decision | None = None
        rank = 3
        key = hash(qname)
        if bits[(key >> 3) & mask] & (1 << (key & 7)):
            for found in self._exact:
                number = found.find(key)
                if number >= 0:
                    best = Decision(found.verdict, "=" + qname.decode(), names[number])
                    rank = found.rank
                    break
        start = 0
        while True:
            suffix = qname[start:] if start else qname
            key = hash(suffix)
            if bits[(key >> 3) & mask] & (1 << (key & 7)):
                for found in self._subtree:
                    if found.rank >= rank:
                        break
                    number = found.find(key)
                    if number >= 0:
                        best = Decision(found.verdict, suffix.decode(), names[number])
                        rank = found.rank
                        break
            if rank <= self._strongest_rank:
                return best
            dot = qname.find(b".", start)
            if dot < 0:
                return best
            start = dot + 1
