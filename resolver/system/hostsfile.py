"""The hosts-file fallback: sinkholed names as hosts lines in a marked block of the hosts file."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from aidns.resolver.config import Settings, load_settings
from aidns.resolver.errors import AidnsError
from aidns.resolver.query import Action
from aidns.resolver.querylog.reader import QueryLogReader
from aidns.resolver.querylog.schema import DB_NAME, reversed_name
from aidns.resolver.rules.lists import LOCAL_NAMES, ListAction, normalize_domain
from aidns.resolver.rules.ruleset import RuleSet, build_rule_set
from aidns.resolver.rules.user import RULES_NAME, UserRule, load_rules
from aidns.resolver.system.macos import MACOS_FLUSH
from aidns.resolver.system.sysfiles import (
    CommandResult,
    Runner,
    replace_file,
    run_command,
    shell_line,
)

BEGIN = b"# >>> aidns begin (managed; do not edit) >>>"
# The same, when aidns had to end the file's last line before adding its block: `remove`
# takes that line break away again.
BEGIN_ADDED_BREAK = b"# >>> aidns begin (managed; do not edit; line break above added) >>>"
END = b"# <<< aidns end <<<"
_BEGIN_PREFIX = b"# >>> aidns begin"
_END_PREFIX = b"# <<< aidns end"
BACKUP_SUFFIX = ".aidns.bak"
SINKHOLES = ("0.0.0.0", "::")


def default_hosts_path(platform: str = sys.platform) -> Path:
    if platform == "win32":
        system_root = os.environ.get("SYSTEMROOT", r"C:\Windows")
        return Path(system_root) / "System32" / "drivers" / "etc" / "hosts"
    return Path("/etc/hosts")


@dataclass(slots=True)
class HostsEntries:
    """The names a hosts file can sinkhole, and what it cannot say."""

    names: list[str]
    sources: list[str]
    process_scoped: list[UserRule] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The block's lines between the markers: comments first, then two lines per name."""
        comments = [
            "# Written by `aidns hosts apply`; `aidns hosts remove` takes it out again.",
            f"# {len(self.names)} names aidns sinkholes, from: {', '.join(self.sources) or '-'}.",
            "# A hosts file has no wildcards: a rule for a name and all names below it adds its",
            "# own name and the names below it that the query log saw or that a list names.",
        ]
        if self.process_scoped:
            shown = "; ".join(
                f"{'=' if r.exact else ''}{r.name} (for {r.scope})" for r in self.process_scoped
            )
            comments.append(
                f"# Not here: {len(self.process_scoped)} rule(s) for some programs only, which a "
                f"hosts file cannot express (it applies to every program): {shown}"
            )
        comments.extend(f"# {note}" for note in self.notes)
        entries = [f"{address} {name}" for name in self.names for address in SINKHOLES]
        return comments + entries

    def block(self, eol: bytes = b"\n") -> bytes:
        body = [BEGIN, *(line.encode("utf-8") for line in self.lines()), END]
        return b"".join(line + eol for line in body)


def sinkhole_entries(settings: Settings, rules: RuleSet | None = None) -> HostsEntries:
    """Every name the enabled block lists and rules sinkhole for everyone, that has a name to
    write: each rule's own name, names below a rule that the query log saw, names any list
    names. A name an allow rule covers is left out: the matcher decides each one."""
    rules = rules if rules is not None else build_rule_set(settings)
    notes: list[str] = []
    candidates: set[str] = set()
    for domain_list in rules.lists:
        candidates.update(rule.domain for rule in domain_list.rules)
        big = domain_list.subtree_hashes or domain_list.exact_hashes
        if big and domain_list.enabled and domain_list.action is ListAction.BLOCK:
            try:
                candidates.update(names_in_file(Path(domain_list.source)))
            except OSError as exc:
                notes.append(
                    f"The list {domain_list.name} keeps only hashes and its file "
                    f"{domain_list.source} cannot be read ({exc.strerror}): its names are missing."
                )
    try:
        candidates.update(logged_names(settings.data_dir / DB_NAME))
    except AidnsError as exc:
        notes.append(f"Names below rules that the query log saw are missing: {exc}")
    kept: dict[str, str] = {}
    for name in candidates:
        if name.encode() in LOCAL_NAMES:
            continue
        decision = rules.matcher.decide(name.encode())
        if decision is not None and decision.action is Action.BLOCKED:
            kept[name] = decision.list_name
    scoped = [r for r in load_rules(settings.data_dir / RULES_NAME) if r.processes]
    return HostsEntries(
        names=sorted(kept, key=reversed_name),
        sources=sorted(set(kept.values())),
        process_scoped=scoped,
        notes=notes,
    )


def entries_from_config(config_path: Path | None, data_dir: Path | None) -> HostsEntries:
    """The hosts-file entries for the settings of `config_path` and `data_dir`."""
    return sinkhole_entries(load_settings(config_path=config_path, data_dir=data_dir))


def names_in_file(path: Path) -> Iterator[str]:
    """Every token of a list file that reads as a domain name, in any list format. Generous on
    purpose: the matcher then keeps only the names the lists really block."""
    with path.open("rb") as lines:
        for raw in lines:
            line = raw.strip()
            if not line or line[:1] in b"#![":
                continue
            for token in line.split():
                if token.startswith(b"#"):
                    break
                text = token.split(b"^", 1)[0].split(b"$", 1)[0].strip(b"|'\",")
                text = text.removeprefix(b"=").removeprefix(b"*.")
                if not text or b":" in text or b"/" in text:
                    continue
                try:
                    yield normalize_domain(text.decode("utf-8")).decode()
                except (UnicodeDecodeError, ValueError):
                    continue


def logged_names(db_path: Path) -> set[str]:
    """Every name the query log holds; none when there is no log yet."""
    if not db_path.exists():
        return set()
    reader = QueryLogReader(db_path)
    try:
        rows = reader.top("domain", limit=-1)
    finally:
        reader.close()
    names = set()
    for row in rows:
        try:
            names.add(normalize_domain(str(row["key"])).decode())
        except ValueError:
            continue
    return names


@dataclass(frozen=True, slots=True)
class _Block:
    start: int  # index of the begin line
    stop: int  # index after the end line
    added_break: bool


def _find_block(lines: Sequence[bytes], path: Path) -> _Block | None:
    begins = [i for i, line in enumerate(lines) if line.strip().startswith(_BEGIN_PREFIX)]
    ends = [i for i, line in enumerate(lines) if line.strip().startswith(_END_PREFIX)]
    if not begins and not ends:
        return None
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        where = ", ".join(str(i + 1) for i in sorted(begins + ends))
        raise AidnsError(
            f"{path}: the aidns begin and end lines (line {where}) do not make one block; "
            "fix them by hand (or restore the backup), then try again"
        )
    added = lines[begins[0]].strip() == BEGIN_ADDED_BREAK
    return _Block(begins[0], ends[0] + 1, added)


def _line_ending(data: bytes) -> bytes:
    """The file's own line ending, judged by its first line."""
    for index, byte in enumerate(data):
        if byte == 0x0A:
            return b"\n"
        if byte == 0x0D:
            return b"\r\n" if data[index + 1 : index + 2] == b"\n" else b"\r"
    return b"\n"


def with_block(data: bytes, entries: HostsEntries, path: Path = Path("hosts")) -> bytes:
    """`data` with aidns's block replaced, or added at the end; every other byte kept."""
    eol = _line_ending(data)
    lines = data.splitlines(keepends=True)
    found = _find_block(lines, path)
    block = entries.block(eol)
    if found is not None:
        if found.added_break:
            block = block.replace(BEGIN, BEGIN_ADDED_BREAK, 1)
        last = lines[found.stop - 1]
        if not last.endswith((b"\n", b"\r")):  # the end line closed the file without a break
            block = block[: -len(eol)]
        return b"".join(lines[: found.start]) + block + b"".join(lines[found.stop :])
    if not data or data.endswith((b"\n", b"\r")):
        return data + block
    return data + eol + block.replace(BEGIN, BEGIN_ADDED_BREAK, 1)


def without_block(data: bytes, path: Path = Path("hosts")) -> bytes:
    """`data` without aidns's block: the file as it was before `with_block`."""
    lines = data.splitlines(keepends=True)
    found = _find_block(lines, path)
    if found is None:
        return data
    before, after = lines[: found.start], lines[found.stop :]
    if found.added_break and not after and before:
        before[-1] = before[-1].rstrip(b"\r\n")
    return b"".join(before) + b"".join(after)


@dataclass(frozen=True, slots=True)
class HostsChange:
    path: Path
    changed: bool
    backup: Path | None = None
    how: str = ""


def backup_path(path: Path) -> Path:
    target = Path(os.path.realpath(path))
    return target.with_name(target.name + BACKUP_SUFFIX)


def _read_hosts(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise AidnsError(
            f"there is no hosts file at {path}; give the right one with --hosts-file"
        ) from None
    except OSError as exc:
        raise AidnsError(f"cannot read {path}: {exc.strerror}") from None


def _check_writable(path: Path, command: str) -> None:
    if not os.access(os.path.realpath(path), os.W_OK):
        raise AidnsError(
            f"{path} is not writable by this user (uid {os.getuid()}), so it is unchanged: run "
            f"`sudo aidns hosts {command}`, or give --hosts-file for a file you may write"
        )


def _write(path: Path, old: bytes, new: bytes, dry_run: bool) -> HostsChange:
    if new == old:
        return HostsChange(path, changed=False)
    backup = backup_path(path)
    if dry_run:
        return HostsChange(path, changed=True, backup=backup)
    mode = os.stat(path).st_mode & 0o7777
    replace_file(backup, old, follow_symlinks=False, mode=mode)
    how = replace_file(path, new)
    return HostsChange(path, changed=True, backup=backup, how=how)


def apply_hosts(path: Path, entries: HostsEntries, *, dry_run: bool = False) -> HostsChange:
    """Put the block into the hosts file, replacing an earlier one; keeps a backup."""
    old = _read_hosts(path)
    new = with_block(old, entries, path)
    if new != old and not dry_run:
        _check_writable(path, "apply")
    return _write(path, old, new, dry_run)


def remove_hosts(path: Path, *, dry_run: bool = False) -> HostsChange:
    """Take the block out again, leaving the file as it was before `apply`."""
    old = _read_hosts(path)
    new = without_block(old, path)
    if new != old and not dry_run:
        _check_writable(path, "remove")
    return _write(path, old, new, dry_run)


def flush_commands(platform: str = sys.platform) -> tuple[tuple[str, ...], ...]:
    """What makes the system forget cached lookups after a hosts change. Linux needs nothing:
    glibc reads the file on every lookup, and systemd-resolved and nscd watch it."""
    return MACOS_FLUSH if platform == "darwin" else ()


def flush_cache(platform: str = sys.platform, runner: Runner = run_command) -> list[CommandResult]:
    return [runner(command) for command in flush_commands(platform)]


def hosts_lines(entries: HostsEntries) -> Iterable[str]:
    """The block as text lines, markers included, as `apply` writes it."""
    yield BEGIN.decode()
    yield from entries.lines()
    yield END.decode()


class CacheFlush(StrEnum):
    """What became of the system's DNS cache after a hosts-file change."""

    NOT_NEEDED = "not needed"  # lookups here read the hosts file as it is now
    SKIPPED = "skipped"  # the file did not change, or it was a dry run
    SUGGESTED = "suggested"  # not asked for: the commands are for a person to run
    FLUSHED = "flushed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class HostsUpdate:
    """What `apply` or `remove` did: the change to the file, the cache flush with its
    commands (and why it failed), and the entries the block holds (none after `remove`)."""

    change: HostsChange
    flush: CacheFlush
    flush_commands: tuple[tuple[str, ...], ...]
    flush_error: str = ""
    entries: HostsEntries = field(default_factory=lambda: HostsEntries([], []))


def _flush_after(
    change: HostsChange, flush: bool, dry_run: bool, platform: str, runner: Runner
) -> tuple[CacheFlush, str]:
    if not flush_commands(platform):
        return CacheFlush.NOT_NEEDED, ""
    if not change.changed or dry_run:
        return CacheFlush.SKIPPED, ""
    if not flush:
        return CacheFlush.SUGGESTED, ""
    for result in flush_cache(platform, runner):
        if not result.ok:
            return CacheFlush.FAILED, f"{shell_line(result.argv)} failed: {result.why()}"
    return CacheFlush.FLUSHED, ""


def apply_to_hosts_file(
    path: Path | None,
    *,
    config_path: Path | None = None,
    data_dir: Path | None = None,
    flush: bool = False,
    dry_run: bool = False,
    platform: str = sys.platform,
    runner: Runner = run_command,
) -> HostsUpdate:
    """Write the names the settings sinkhole into the hosts file (the system's by default),
    then flush the system's DNS cache if asked and it changed."""
    path = path or default_hosts_path(platform)
    entries = entries_from_config(config_path, data_dir)
    change = apply_hosts(path, entries, dry_run=dry_run)
    state, error = _flush_after(change, flush, dry_run, platform, runner)
    return HostsUpdate(change, state, flush_commands(platform), error, entries)


def remove_from_hosts_file(
    path: Path | None,
    *,
    flush: bool = False,
    dry_run: bool = False,
    platform: str = sys.platform,
    runner: Runner = run_command,
) -> HostsUpdate:
    """Take aidns's block out of the hosts file (the system's by default), then flush the
    system's DNS cache if asked and it changed."""
    path = path or default_hosts_path(platform)
    change = remove_hosts(path, dry_run=dry_run)
    state, error = _flush_after(change, flush, dry_run, platform, runner)
    return HostsUpdate(change, state, flush_commands(platform), error)
