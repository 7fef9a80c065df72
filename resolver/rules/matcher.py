"""The matcher that decides a name against every enabled list, in about a microsecond.

A lookup is one dict probe plus one binary search per label of the queried name: small
lists live in dicts keyed by the name's hash, big lists in sorted hash arrays behind a bit
filter, about 12 MB for a million names.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections.abc import Sequence

from aidns.resolver.query import Action, Decision
from aidns.resolver.rules.lists import ACTION_PRIORITY, DomainList, ListAction, Rule

_VERDICT = {
    ListAction.BLOCK: Action.BLOCKED,
    ListAction.WATCH: Action.WATCHED,
    ListAction.ALLOW: Action.ALLOWED,
}

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
        self._strongest_rank = ACTION_PRIORITY[ListAction.BLOCK]
        self.rule_count = 0
        for domain_list in lists:
            if domain_list.enabled:
                self._add(domain_list)
        for segments in (self._subtree_segments, self._exact_segments):
            segments.sort(key=lambda s: ACTION_PRIORITY[s.action])
        if self._subtree_segments or self._exact_segments:
            # about 0.3 s for a million names: built beside the serving path, used once ready
            threading.Thread(target=self._build_filter, name="filter", daemon=True).start()

    def _add(self, domain_list: DomainList) -> None:
        if domain_list.action is ListAction.ALLOW or any(
            r.action is ListAction.ALLOW for r in domain_list.rules
        ):
            self._strongest_rank = ACTION_PRIORITY[ListAction.ALLOW]
        for rule in domain_list.rules:
            table = self._exact if rule.exact else self._subtree
            key = hash(rule.domain.encode())
            held = table.get(key)
            if held is None or ACTION_PRIORITY[rule.action] < ACTION_PRIORITY[held.action]:
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
        bits = self._filter
        if bits and not bits[(key >> 3) & _FILTER_MASK] & (1 << (key & 7)):
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
                ACTION_PRIORITY[rule.action],
            )
        if self._exact_segments:
            segment = self._search(self._exact_segments, key)
            if segment is not None and ACTION_PRIORITY[segment.action] < rank:
                rank = ACTION_PRIORITY[segment.action]
                best = Decision(_VERDICT[segment.action], "=" + qname.decode(), segment.list_name)
        subtree = self._subtree
        segments = self._subtree_segments
        start = 0
        while True:
            suffix = qname[start:] if start else qname
            key = hash(suffix)
            rule = subtree.get(key)
            if rule is not None and ACTION_PRIORITY[rule.action] < rank:
                rank = ACTION_PRIORITY[rule.action]
                best = Decision(_VERDICT[rule.action], rule.text, rule.list_name)
            if segments:
                segment = self._search(segments, key)
                if segment is not None and ACTION_PRIORITY[segment.action] < rank:
                    rank = ACTION_PRIORITY[segment.action]
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
