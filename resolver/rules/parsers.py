"""Reading text lists: hosts, AdBlock and plain names, within the list limits.

Text lists may be in any of the formats Pi-hole, AdGuard Home and Blocky read: hosts lines
(`0.0.0.0 a.example b.example`, exact names, as those tools match them), plain names and
`*.name` (the name and everything below it), AdBlock `||name^` (the same), and `=name`
(exact). Other AdBlock syntax and bad lines are skipped and counted, never fatal.
"""

from __future__ import annotations

import ipaddress
import re
from array import array
from collections.abc import Iterator
from pathlib import Path

from aidns.resolver.config import ListLimits
from aidns.resolver.errors import ListError
from aidns.resolver.memory import release_memory
from aidns.resolver.rules.lists import (
    BIG_LIST_ENTRIES,
    DOMAIN_PATTERN,
    LOCAL_NAMES,
    DomainList,
    ListAction,
    Rule,
    normalize_domain,
)

NO_MORE_THAN_DEFAULT = ListLimits()


def read_limited_list(path: Path, limits: ListLimits) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limits.max_bytes + 1)
    except OSError as exc:
        raise ListError(f"cannot read: {exc.strerror}", source=str(path)) from None
    if len(data) > limits.max_bytes:
        raise _too_big(path, limits)
    line = _longest_line(data, limits)
    if line:
        raise _line_too_long(path, line, limits)
    return data


def _too_big(path: Path, limits: ListLimits) -> ListError:
    return ListError(
        f"over {limits.max_bytes:,} bytes (list_max_bytes); not used", source=str(path)
    )


def _line_too_long(path: Path, line: int, limits: ListLimits) -> ListError:
    return ListError(
        f"longer than {limits.max_line_bytes:,} bytes (list_max_line_bytes); the list is not used",
        source=str(path),
        line=line,
    )


def too_many(path: Path, limits: ListLimits) -> ListError:
    return ListError(
        f"over {limits.max_entries:,} names (list_max_entries); not used", source=str(path)
    )


def _longest_line(data: bytes, limits: ListLimits) -> int:
    """The number (from 1) of the first line of `data` over the line limit, or 0."""
    if len(data) <= limits.max_line_bytes:
        return 0
    lines = data.split(b"\n")
    if max(map(len, lines)) <= limits.max_line_bytes:
        return 0
    return next(n for n, line in enumerate(lines, 1) if len(line) > limits.max_line_bytes)


def load_text_list(
    path: Path, action: ListAction = ListAction.BLOCK, limits: ListLimits = NO_MORE_THAN_DEFAULT
) -> DomainList:
    """A hosts, AdBlock or plain list; bad and unsupported lines are skipped and counted."""
    domain_list = DomainList(name=path.stem, action=action, source=str(path))
    subtree: array[int] = array("q")
    exact: array[int] = array("q")
    small_subtree: list[bytes] = []
    small_exact: list[bytes] = []
    first_line = 1
    for chunk in _chunks(path, limits):
        names, exact_names = _parse_chunk(chunk, first_line, domain_list)
        subtree.extend(map(hash, names))
        exact.extend(map(hash, exact_names))
        if len(subtree) + len(exact) > limits.max_entries:
            raise too_many(path, limits)
        if len(small_subtree) + len(small_exact) < BIG_LIST_ENTRIES:
            small_subtree.extend(names[:BIG_LIST_ENTRIES])
            small_exact.extend(exact_names[:BIG_LIST_ENTRIES])
        first_line += chunk.count(b"\n") - 1
    if len(subtree) + len(exact) < BIG_LIST_ENTRIES:
        _names_to_rules(domain_list, small_subtree, small_exact)
    else:
        del small_subtree, small_exact
        domain_list.subtree_hashes = _sorted_hashes(subtree)
        domain_list.exact_hashes = _sorted_hashes(exact)
        release_memory()
    return domain_list


def _sorted_hashes(hashes: array[int]) -> array[int]:
    ordered = array("q", sorted(hashes))
    del hashes[:]
    return ordered


_CHUNK_BYTES = 1 << 20
_CLEAN_CHUNK = re.compile(rb"[a-z0-9_.\n-]*")
_BAD_SEQUENCES = (b"..", b"\n.", b".\n", b"\n-", b"-\n", b".-", b"-.")
_COMMENT_LINES = re.compile(rb"\n[ \t]*#[^\n]*")
_HOSTS_PREFIXES = tuple(
    b"\n" + address + space
    for address in (b"0.0.0.0", b"127.0.0.1", b"::", b"0")
    for space in (b" ", b"\t")
)
_LOCAL_HINTS = (b"localhost", b"broadcasthost", b"ip6-", b"\nlocal\n")
_BARE_ADDRESS = re.compile(rb"\n[0-9.]+\n")
_LONGEST_LABEL = 63  # a name no longer than this can't be too long, nor have a too-long label


def _chunks(path: Path, limits: ListLimits) -> Iterator[bytes]:
    """Lower-cased slices of about 1 MB that end at a line break and start with one, read as
    they are needed, so a big list never sits in memory whole. A file or a line over its
    limit raises ListError as soon as it is seen."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ListError(f"cannot read: {exc.strerror}", source=str(path)) from None
    with handle:
        rest = b""
        first = True
        read = 0
        lines = 0
        while True:
            try:
                block = handle.read(_CHUNK_BYTES)
            except OSError as exc:
                raise ListError(f"cannot read: {exc.strerror}", source=str(path)) from None
            read += len(block)
            if read > limits.max_bytes:
                raise _too_big(path, limits)
            if first:
                block, first = block.removeprefix(b"\xef\xbb\xbf"), False
            if not block:
                break
            block = rest + block
            line = _longest_line(block, limits)
            if line:
                raise _line_too_long(path, lines + line, limits)
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                rest = block
                continue
            rest = block[cut:]
            lines += block.count(b"\n", 0, cut)
            yield _tidy(block[:cut])
        if rest:
            yield _tidy(rest + b"\n")


def _tidy(data: bytes) -> bytes:
    data = data.lower()
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return b"\n" + data


def _parse_chunk(
    chunk: bytes, first_line: int, domain_list: DomainList
) -> tuple[list[bytes], list[bytes]]:
    """(subtree names, exact names). Clean plain or clean `0.0.0.0 name` chunks are split in C;
    anything else goes line by line."""
    body = _COMMENT_LINES.sub(b"", chunk) if b"#" in chunk else chunk
    hosts = 0
    for prefix in _HOSTS_PREFIXES if b" " in body or b"\t" in body else ():
        if prefix in body:
            if prefix + b"\n" in body:  # an address without a name: let the slow path say so
                return _parse_lines(chunk, first_line, domain_list)
            hosts += body.count(prefix)
            body = body.replace(prefix, b"\n")
    if (
        _CLEAN_CHUNK.fullmatch(body)
        and not any(bad in body for bad in _BAD_SEQUENCES)
        and not _BARE_ADDRESS.search(body)
    ):
        names = body.split()
        if hosts in (0, len(names)) and max(map(len, names), default=0) <= _LONGEST_LABEL:
            if any(hint in body for hint in _LOCAL_HINTS):
                names = [name for name in names if name not in LOCAL_NAMES]
            return ([], names) if hosts else (names, [])
    return _parse_lines(chunk, first_line, domain_list)


def _parse_lines(
    chunk: bytes, first_line: int, domain_list: DomainList
) -> tuple[list[bytes], list[bytes]]:
    """The slow path, for chunks with `=`, `||`, several names a line or bad lines."""
    subtree: list[bytes] = []
    exact: list[bytes] = []
    for number, raw in enumerate(chunk.split(b"\n")[1:], start=first_line):
        line = raw.strip()
        if not line or line[:1] in b"#![":  # comments of every format; `[Adblock Plus 2.0]`
            continue
        parsed = _parse_line(line)
        if isinstance(parsed, str):
            shown = line.decode("utf-8", "replace")[:80]
            domain_list.note_problem(f"{domain_list.source}:{number}: {parsed}: {shown!r}")
            continue
        names, is_exact = parsed
        (exact if is_exact else subtree).extend(n for n in names if n not in LOCAL_NAMES)
    return subtree, exact


_ADBLOCK = re.compile(rb"\|\|(%s)\.?\^\|?" % DOMAIN_PATTERN.pattern)
_COSMETIC = re.compile(rb"#[@?$%]?#|#@?\$\?#")
_TRAILING_COMMENT = re.compile(rb"[ \t]+#.*$")
_IP_LIKE = re.compile(rb"[0-9.]+|[0-9a-f:.]*:[0-9a-z:.%]*")


def _parse_line(line: bytes) -> tuple[list[bytes], bool] | str:
    """One stripped, lower-case, non-comment line: (names, exact) or why it was skipped."""
    if line.startswith(b"@@"):
        return "AdBlock exception rule, not supported"
    if line.startswith(b"/"):
        return "regular-expression rule, not supported"
    if _COSMETIC.search(line):
        return "AdBlock cosmetic rule, not supported"
    line = _TRAILING_COMMENT.sub(b"", line)
    if b"$" in line:
        return "AdBlock rule with $options, not supported"
    if line.startswith(b"|"):
        found = _ADBLOCK.fullmatch(line)
        return ([found.group(1)], False) if found else "AdBlock rule not supported"
    tokens = line.split()
    if len(tokens) > 1:
        if not _is_address(tokens[0]):
            return "not a domain name"
        names = [_name(token) for token in tokens[1:]]
        if None in names:
            return "not a domain name in a hosts line"
        return [n for n in names if n is not None], True
    token = tokens[0]
    if _is_address(token):
        return "an address without a name"
    exact = token.startswith(b"=")
    if exact:
        token = token[1:]
    elif token.startswith(b"*."):
        token = token[2:]
    if b"*" in token:
        return "wildcard in the middle of a name, not supported"
    name = _name(token)
    return "not a domain name" if name is None else ([name], exact)


_COMMON_ADDRESSES = frozenset({b"0.0.0.0", b"127.0.0.1", b"::", b"::1", b"0"})


def _is_address(token: bytes) -> bool:
    if token in _COMMON_ADDRESSES:
        return True
    if not _IP_LIKE.fullmatch(token):
        return False
    try:
        ipaddress.ip_address(token.split(b"%", 1)[0].decode())
    except ValueError:
        return False
    return True


def _name(token: bytes) -> bytes | None:
    if token.endswith(b"."):
        token = token[:-1]
    if len(token) <= 253 and DOMAIN_PATTERN.fullmatch(token):
        return token
    if token.isascii():
        return None
    try:
        return normalize_domain(token.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _names_to_rules(domain_list: DomainList, subtree: list[bytes], exact: list[bytes]) -> None:
    """Small lists keep their names, so `check` and the log can show them."""
    for names, is_exact in ((subtree, False), (exact, True)):
        for name in dict.fromkeys(names):
            domain_list.rules.append(
                Rule(name.decode(), domain_list.action, domain_list.name, exact=is_exact)
            )
    domain_list.subtree_hashes = array("q")
    domain_list.exact_hashes = array("q")
