"""What `block`, `unblock`, `allow`, `pause` and `resume` change, and what `rules` and `status`
read: the rules wing's API for the CLI and the HTTP API. It never prints.

Every change is a file in the data dir, written under its lock, so it works whether or not the
server runs; a running server picks the change up within a second.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aidns.resolver.config import load_settings
from aidns.resolver.datafiles import (
    PAUSE_NAME,
    locked,
    process_alive,
    read_pause,
    read_status,
    write_atomic,
)
from aidns.resolver.errors import AidnsError, ConfigError
from aidns.resolver.query import Action, Decision
from aidns.resolver.querylog.reader import DURATION, UNITS_S, QueryLogReader
from aidns.resolver.querylog.schema import DB_NAME
from aidns.resolver.rules.names import check_reach, parse_rule_name
from aidns.resolver.rules.ruleset import build_rule_set
from aidns.resolver.rules.user import (
    RULES_NAME,
    Change,
    UserRule,
    add_rules,
    covering_allows,
    load_rules,
    plan_surgical,
    remove_rules,
)


def block_name(
    data_dir: Path,
    name: str,
    *,
    note: str = "",
    surgical: bool = False,
    processes: Sequence[str] = (),
    exact: bool = False,
    force: bool = False,
    dry_run: bool = False,
) -> Change:
    """Block `name` and below for everyone (exactly `name` with `exact` or `=name`); or,
    `surgical` or with `processes`, only the names under it that AI tools (or the processes
    given) looked up, for them. A public suffix or an IP address is refused unless `force`."""
    typed = parse_rule_name(name)
    check_reach(typed.name, force)
    exact = exact or typed.exact is True
    if surgical or processes:
        change = plan_surgical(
            typed.name,
            _seen_under(data_dir, typed.name),
            processes,
            exact_fallback=exact,
            note=note,
        )
    else:
        change = Change(added=[UserRule(typed.name, exact=exact, note=note)])
    if change.added:
        with locked(data_dir):
            done = add_rules(data_dir / RULES_NAME, change.added, dry_run=dry_run)
        change.added = done.added
    for allow in covering_allows(load_rules(data_dir / RULES_NAME), typed.name):
        change.messages.append(
            f"your allow rule for {allow.typed} wins over any block, so {typed.name} still "
            f"resolves; remove it with `{allow.undo}`"
        )
    return change


def _seen_under(data_dir: Path, name: str) -> list[dict[str, Any]]:
    path = data_dir / DB_NAME
    if not path.exists():
        return []
    reader = QueryLogReader(path)
    try:
        return reader.askers(name)
    finally:
        reader.close()


@dataclass(slots=True)
class Unblock:
    """What `unblock` removed, and whether a list (not a rule of the user's) still blocks it."""

    change: Change
    blocked_by_list: Decision | None = None
    # The rules were changed, but the lists could not be loaded to check the name against them.
    check_error: AidnsError | None = None


def unblock_name(
    data_dir: Path,
    name: str,
    *,
    processes: Sequence[str] | None = None,
    config_path: Path | None = None,
    dry_run: bool = False,
) -> Unblock:
    """Remove the user's block rules for `name` (only the exact ones for `=name`, only the
    subtree ones for `*.name`; only those for `processes` when given), then see whether a
    list blocks it."""
    typed = parse_rule_name(name)
    with locked(data_dir):
        change = remove_rules(
            data_dir / RULES_NAME,
            typed.name,
            "block",
            exact=typed.exact,
            processes=processes,
            dry_run=dry_run,
        )
    try:
        settings = load_settings(config_path=config_path, data_dir=data_dir)
        decision = build_rule_set(settings).matcher.decide(typed.name.encode())
    except AidnsError as exc:
        return Unblock(change, check_error=exc)
    by_list = decision is not None and not decision.list_name.startswith("rules:")
    if decision is not None and decision.action is Action.BLOCKED and by_list:
        return Unblock(change, blocked_by_list=decision)
    return Unblock(change)


def allow_name(
    data_dir: Path,
    name: str,
    *,
    note: str = "",
    exact: bool = False,
    force: bool = False,
    dry_run: bool = False,
) -> Change:
    """Allow `name` (and below, unless `exact` or `=name`): this beats every list and every
    block rule. A public suffix or an IP address is refused unless `force`."""
    typed = parse_rule_name(name)
    check_reach(typed.name, force)
    rule = UserRule(typed.name, kind="allow", exact=exact or typed.exact is True, note=note)
    with locked(data_dir):
        return add_rules(data_dir / RULES_NAME, [rule], dry_run=dry_run)


def unallow_name(data_dir: Path, name: str, *, dry_run: bool = False) -> Change:
    """Remove the user's allow rules for `name` (only the exact one for `=name`, only the
    subtree one for `*.name`)."""
    typed = parse_rule_name(name)
    with locked(data_dir):
        return remove_rules(
            data_dir / RULES_NAME, typed.name, "allow", exact=typed.exact, dry_run=dry_run
        )


def user_rules(data_dir: Path) -> list[UserRule]:
    """The user's own rules, in the order of the rules file."""
    return load_rules(data_dir / RULES_NAME)


def pause_end(text: str, now: float) -> float:
    """When a pause given as `30s`, `5m`, `2h`, `2d`, `forever` or an end time ends: Unix
    seconds, or inf for until resumed. ConfigError says what is wrong."""
    value = text.strip().lower()
    if value == "forever":
        return math.inf
    if value.replace(".", "", 1).isdigit():
        value += "s" if float(value) == 0 else "?"  # a number needs its unit
    found = DURATION.match(value)
    if found:
        seconds = float(found.group(1)) * UNITS_S[found.group(2)]
        if seconds <= 0:
            raise ConfigError(
                f"DURATION: {text!r} is no time at all; `forever` pauses until `aidns resume`"
            )
        return now + seconds
    try:
        end = datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ConfigError(
            f"DURATION: {text!r} is not a duration or an end time; use 30s, 5m, 2h, 2d, "
            "`forever`, or a time to end, such as 2026-11-29T18:00"
        ) from None
    if end <= now:
        raise ConfigError(f"DURATION: {text!r} is in the past")
    return end


def pause_blocking(data_dir: Path, duration: str) -> float:
    """Stop blocking for `duration` (see `pause_end`). Returns when the pause ends."""
    deadline = pause_end(duration, time.time())
    until = "" if deadline == math.inf else f"{deadline:.3f}"
    with locked(data_dir):
        write_atomic(data_dir / PAUSE_NAME, until + "\n")
    return deadline


def resume_blocking(data_dir: Path) -> bool:
    """Blocking on again; False when it was not paused."""
    try:
        with locked(data_dir):
            paused = read_pause(data_dir) is not None
            (data_dir / PAUSE_NAME).unlink(missing_ok=True)
    except OSError as exc:
        raise AidnsError(str(exc)) from None
    return paused


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """Whether the server runs, whether blocking is paused, and what the server last wrote."""

    running: bool
    paused_until: float | None
    written: dict[str, Any] | None  # <data-dir>/status.json; None when there is none

    def as_json(self) -> dict[str, Any]:
        return {"running": self.running, "paused_until": self.paused_until, "status": self.written}


def server_status(data_dir: Path) -> ServerStatus:
    """The status the server keeps in the data dir, and whether its process is alive."""
    found = read_status(data_dir)
    running = bool(found) and process_alive(int(found.get("pid", 0))) if found else False
    return ServerStatus(running, read_pause(data_dir), found)
