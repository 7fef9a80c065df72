"""`aidns block`, `unblock`, `allow`, `rules`, `pause`, `resume` and `status`.

They edit files in the data dir, so they work whether or not the server runs; a running
server picks the change up within a second.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from aidns.cli.errors import fail
from aidns.cli.options import ConfigOption, DataDirOption
from aidns.cli.table import render, when
from aidns.resolver.app import build_rules
from aidns.resolver.config import load_settings, resolve_data_dir
from aidns.resolver.datafiles import (
    PAUSE_NAME,
    locked,
    process_alive,
    read_pause,
    read_status,
    write_atomic,
)
from aidns.resolver.errors import AidnsError, ConfigError
from aidns.resolver.query import Action
from aidns.resolver.querylog.reader import QueryLogReader, parse_time
from aidns.resolver.querylog.schema import DB_NAME
from aidns.resolver.rules.user import (
    RULES_NAME,
    Change,
    UserRule,
    add_rules,
    domain_argument,
    load_rules,
    plan_surgical,
    remove_rules,
)

NoteOption = Annotated[str, typer.Option(help="Why: shown by `aidns rules`.")]
DEFAULT_PAUSE = "5m"


def _describe(rule: UserRule) -> str:
    match = "exactly " if rule.exact else ""
    what = f"{rule.kind} {match}{rule.name}" + ("" if rule.exact else " and every name below it")
    return f"{what}, for {rule.scope}"


def _report(change: Change, dry_run: bool) -> None:
    verb = "would " if dry_run else ""
    for message in change.messages:
        typer.echo(message)
    for rule in change.added:
        typer.echo(f"{verb}{'add' if dry_run else 'added'}: {_describe(rule)}")
    for rule in change.removed:
        typer.echo(f"{verb}{'remove' if dry_run else 'removed'}: {_describe(rule)}")


def _seen_under(data_dir: Path, name: str) -> list[dict[str, Any]]:
    path = data_dir / DB_NAME
    if not path.exists():
        return []
    reader = QueryLogReader(path)
    try:
        return reader.askers(name)
    finally:
        reader.close()


def block(
    name: Annotated[str, typer.Argument(help="The name; names below it are blocked too.")],
    note: NoteOption = "",
    surgical: Annotated[
        bool,
        typer.Option(
            "--surgical",
            help="Block only the names under NAME that the query log saw, and only for the "
            "processes that looked them up.",
        ),
    ] = False,
    process: Annotated[
        list[str] | None,
        typer.Option(help="With --surgical: block for these processes (name, tool or path)."),
    ] = None,
    exact: Annotated[
        bool,
        typer.Option("--exact", help="Block exactly NAME; with --surgical, when nothing was seen."),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Block NAME and every name below it, for every program (or surgically: see --surgical)."""
    directory = resolve_data_dir(config, data_dir)
    if surgical or process:
        change = plan_surgical(
            name, _seen_under(directory, name), process or (), exact_fallback=exact, note=note
        )
    else:
        change = Change(added=[UserRule(domain_argument(name), exact=exact, note=note)])
    if change.added:
        with locked(directory):
            done = add_rules(directory / RULES_NAME, change.added, dry_run=dry_run)
        change.added = done.added
    _report(change, dry_run)


def unblock(
    name: Annotated[str, typer.Argument(help="A name you blocked with `aidns block`.")],
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Remove your block rules for NAME; says so when a list blocks it instead."""
    directory = resolve_data_dir(config, data_dir)
    with locked(directory):
        change = remove_rules(directory / RULES_NAME, name, "block", dry_run=dry_run)
    _report(change, dry_run)
    settings = load_settings(config_path=config, data_dir=directory)
    decision = build_rules(settings).matcher.decide(domain_argument(name).encode())
    by_list = decision is not None and not decision.list_name.startswith("rules:")
    if decision is not None and decision.action is Action.BLOCKED and by_list:
        typer.echo(
            f"{name} is still blocked by the list {decision.list_name!r} (rule {decision.rule}). "
            f"Turn that list off with `aidns lists disable {decision.list_name}`, "
            f"or let the name through with `aidns allow {name}`."
        )
    elif not change.removed:
        typer.echo(f"you have no block rule for {name}; nothing changed")


def allow(
    name: Annotated[str, typer.Argument(help="The name; names below it are allowed too.")],
    note: NoteOption = "",
    exact: Annotated[bool, typer.Option("--exact", help="Allow exactly NAME only.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Allow NAME (and below): this beats every list and every block rule."""
    directory = resolve_data_dir(config, data_dir)
    rule = UserRule(domain_argument(name), kind="allow", exact=exact, note=note)
    with locked(directory):
        change = add_rules(directory / RULES_NAME, [rule], dry_run=dry_run)
    _report(change, dry_run)


def rules(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Your own rules: name, kind (block, allow, surgical), scope, note, when added."""
    found = load_rules(resolve_data_dir(config, data_dir) / RULES_NAME)
    shown = [
        {
            "name": ("=" if r.exact else "") + r.name,
            "kind": r.label,
            "scope": r.scope,
            "note": r.note,
            "added": r.added,
        }
        for r in found
    ]
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
    elif not shown:
        typer.echo("no rules of your own yet: see `aidns block --help` and `aidns allow --help`")
    else:
        columns = [("name", "name"), ("kind", "kind"), ("scope", "scope"), ("note", "note")]
        typer.echo(render(shown, [*columns, ("added", "added")]))


def pause(
    duration: Annotated[
        str, typer.Argument(help="How long: 30s, 5m, 2h; `forever` until `aidns resume`.")
    ] = DEFAULT_PAUSE,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Stop blocking for everyone for a while (five minutes unless told); still logs all."""
    directory = resolve_data_dir(config, data_dir)
    if duration in ("forever", "0"):
        until, text = "", "until `aidns resume`"
    else:
        seconds = time.time() - parse_time(duration, option="DURATION", now=time.time())
        if seconds <= 0:
            raise ConfigError(f"DURATION: {duration!r} must be positive")
        deadline = time.time() + seconds
        until = f"{deadline:.3f}"
        text = f"until {time.strftime('%H:%M:%S', time.localtime(deadline))}"
    with locked(directory):
        write_atomic(directory / PAUSE_NAME, until + "\n")
    typer.echo(f"blocking paused {text}")


def resume(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Blocking on again."""
    try:
        directory = resolve_data_dir(config, data_dir)
        with locked(directory):
            (directory / PAUSE_NAME).unlink(missing_ok=True)
    except (AidnsError, OSError) as exc:
        raise fail(AidnsError(str(exc))) from None
    typer.echo("blocking resumed")


def status(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Running or not, paused or not, lists loaded, queries and blocks since start, errors."""
    directory = resolve_data_dir(config, data_dir)
    found = read_status(directory)
    running = bool(found) and process_alive(int(found.get("pid", 0))) if found else False
    paused = read_pause(directory)
    if as_json:
        report = {"running": running, "paused_until": paused, "status": found}
        typer.echo(json.dumps(report, indent=2))
        raise typer.Exit(0 if running else 1)
    if not found or not running:
        last = f" (last seen {when(found.get('updated'))})" if found else ""
        typer.echo(f"aidns is not running{last}; data dir {directory}")
    else:
        verdicts = found.get("by_verdict", {})
        typer.echo(f"aidns is running, pid {found['pid']}, since {when(found.get('started'))}")
        typer.echo(f"listening: {', '.join(found.get('listen', []))}")
        typer.echo(
            f"queries: {found.get('queries', 0)}, blocked {verdicts.get('blocked', 0)}, "
            f"watched {verdicts.get('watched', 0)}, cached {verdicts.get('cached', 0)}"
        )
        lists = found.get("lists", [])
        loaded = [item for item in lists if item.get("enabled") and item.get("entries")]
        typer.echo(f"lists: {len(loaded)} on, {found.get('rules', 0)} rules")
        health = [describe_upstream(item) for item in found.get("upstream_health", [])]
        if health:
            typer.echo(f"upstreams: {'; '.join(health)}")
        stale = found.get("cache", {}).get("stale_answers", 0)
        if stale:
            typer.echo(f"answered {stale} queries from expired cache entries: no upstream answered")
    if paused is not None:
        ends = "until resumed" if paused == float("inf") else f"until {when(paused)}"
        typer.echo(f"blocking is PAUSED {ends}")
    for error in (found or {}).get("errors", []) if running else []:
        typer.echo(f"error: {error}")
    raise typer.Exit(0 if running else 1)


def describe_upstream(health: dict[str, Any]) -> str:
    """`9.9.9.9 12.5 ms`, `9.9.9.9 failing (3 in a row)` or `9.9.9.9 not asked yet`."""
    name, failures, rtt_ms = (
        health.get("upstream"),
        health.get("failures_in_a_row"),
        health.get("rtt_ms"),
    )
    if failures:
        return f"{name} failing ({failures} in a row)"
    return f"{name} {rtt_ms:g} ms" if rtt_ms is not None else f"{name} not asked yet"
