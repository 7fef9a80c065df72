"""`aidns block`, `unblock`, `allow`, `rules`, `pause`, `resume` and `status`.

They edit files in the data dir, so they work whether or not the server runs; a running
server picks the change up within a second.
"""

from __future__ import annotations

import json
import math
import time
from typing import Annotated, Any

import typer

from aidns.cli import completion
from aidns.cli.options import ConfigOption, DataDirOption
from aidns.cli.table import render, when
from aidns.resolver.config import resolve_data_dir
from aidns.resolver.rules.edit import (
    allow_name,
    block_name,
    pause_blocking,
    resume_blocking,
    server_status,
    unallow_name,
    unblock_name,
    user_rules,
)
from aidns.resolver.rules.user import Change, UserRule

NoteOption = Annotated[str, typer.Option(help="Why: shown by `aidns rules`.")]
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force", help="Take a top-level domain, a public suffix or an IP address all the same."
    ),
]
NAME_SYNTAX = (
    "NAME covers the name and every name below it; =NAME exactly the name; *.NAME as NAME."
)
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


def block(
    name: Annotated[str, typer.Argument(help=f"The name. {NAME_SYNTAX}")],
    note: NoteOption = "",
    surgical: Annotated[
        bool,
        typer.Option(
            "--surgical",
            help="Block only the names under NAME that AI tools looked up (as the query log "
            "saw), and only for those tools; other programs are left alone and named.",
        ),
    ] = False,
    process: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PROCESS",
            autocompletion=completion.tool_names,
            help="Block for these processes (name, tool or path; globs allowed), only the names "
            "under NAME they looked up.",
        ),
    ] = None,
    exact: Annotated[
        bool,
        typer.Option("--exact", help="Block exactly NAME; with --surgical, when nothing was seen."),
    ] = False,
    force: ForceOption = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Block NAME and every name below it, for every program (or surgically: see --surgical)."""
    change = block_name(
        resolve_data_dir(config, data_dir),
        name,
        note=note,
        surgical=surgical,
        processes=process or (),
        exact=exact,
        force=force,
        dry_run=dry_run,
    )
    _report(change, dry_run)


def unblock(
    name: Annotated[
        str,
        typer.Argument(
            autocompletion=completion.rule_names,
            help="A name you blocked: NAME removes every block rule for it, =NAME only the "
            "exact ones, *.NAME only those for the name and below.",
        ),
    ],
    process: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PROCESS",
            help="Only the rule scoped to exactly these processes (see `aidns rules`).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Remove your block rules for NAME; says so when a list blocks it instead."""
    directory = resolve_data_dir(config, data_dir)
    done = unblock_name(directory, name, processes=process, config_path=config, dry_run=dry_run)
    _report(done.change, dry_run)
    if done.check_error is not None:
        raise done.check_error
    decision = done.blocked_by_list
    if decision is not None:
        typer.echo(
            f"{name} is still blocked by the list {decision.list_name!r} (rule {decision.rule}). "
            f"Turn that list off with `aidns lists disable {decision.list_name}`, "
            f"or let the name through with `aidns allow {name}`."
        )
    elif not done.change.removed:
        typer.echo(f"you have no block rule for {name}; nothing changed")


def allow(
    name: Annotated[str, typer.Argument(help=f"The name. {NAME_SYNTAX}")],
    note: NoteOption = "",
    exact: Annotated[bool, typer.Option("--exact", help="Allow exactly NAME only.")] = False,
    force: ForceOption = False,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Allow NAME (and below): this beats every list and every block rule. Undo: `unallow`."""
    directory = resolve_data_dir(config, data_dir)
    change = allow_name(directory, name, note=note, exact=exact, force=force, dry_run=dry_run)
    _report(change, dry_run)


def unallow(
    name: Annotated[
        str,
        typer.Argument(
            autocompletion=completion.rule_names,
            help="A name you allowed: NAME removes every allow rule for it, =NAME only the "
            "exact one, *.NAME only the one for the name and below.",
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Remove your allow rules for NAME: lists and block rules apply to it again."""
    change = unallow_name(resolve_data_dir(config, data_dir), name, dry_run=dry_run)
    _report(change, dry_run)
    if not change.removed:
        typer.echo(f"you have no allow rule for {name}; nothing changed")


def rules(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Your own rules: name (=NAME: exactly), kind, scope, note, when added, and the command
    that undoes each."""
    shown = [rule.as_json() for rule in user_rules(resolve_data_dir(config, data_dir))]
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
    elif not shown:
        typer.echo("no rules of your own yet: see `aidns block --help` and `aidns allow --help`")
    else:
        columns = [("name", "name"), ("kind", "kind"), ("scope", "scope"), ("note", "note")]
        typer.echo(render(shown, [*columns, ("added", "added"), ("undo", "undo")]))


def pause(
    duration: Annotated[
        str,
        typer.Argument(
            help="How long: 30s, 5m, 2h, 2d; an end time such as 2026-11-29T18:00; or "
            "`forever`, until `aidns resume`."
        ),
    ] = DEFAULT_PAUSE,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Stop blocking for everyone for a while (five minutes unless told); still logs all."""
    until = pause_blocking(resolve_data_dir(config, data_dir), duration)
    typer.echo(
        f"blocking paused {'until `aidns resume`' if until == math.inf else when_ends(until)}"
    )


def when_ends(moment: float) -> str:
    """`until 18:00:00` today, with the date on any other day."""
    local = time.localtime(moment)
    today = time.localtime()
    if local[:3] == today[:3]:
        return f"until {time.strftime('%H:%M:%S', local)}"
    return f"until {time.strftime('%a %Y-%m-%d %H:%M:%S', local)}"


def resume(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Blocking on again."""
    if resume_blocking(resolve_data_dir(config, data_dir)):
        typer.echo("blocking resumed")
    else:
        typer.echo("blocking was not paused; nothing changed")


def status(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Running or not, paused or not, lists loaded, queries and blocks since start, errors."""
    directory = resolve_data_dir(config, data_dir)
    state = server_status(directory)
    found, running, paused = state.written, state.running, state.paused_until
    if as_json:
        typer.echo(json.dumps(state.as_json(), indent=2))
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
        tcp = describe_tcp(found.get("tcp", {}))
        if tcp:
            typer.echo(tcp)
        attribution = describe_attribution(found.get("attribution", {}))
        if attribution:
            typer.echo(attribution)
        faults = found.get("faults", {})
        if faults:
            kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(faults.items()))
            typer.echo(f"unexpected errors: {sum(faults.values())} ({kinds}); see aidns's log")
    if paused is not None:
        ends = "until resumed" if paused == float("inf") else when_ends(paused)
        typer.echo(f"blocking is PAUSED {ends}")
    for error in (found or {}).get("errors", []) if running else []:
        typer.echo(f"error: {error}")
    raise typer.Exit(0 if running else 1)


def describe_attribution(counts: dict[str, int]) -> str | None:
    """How often the process was searched for after the answer, or skipped; None when never."""
    later = counts.get("searched_after_answer", 0)
    skipped = counts.get("skipped_for_share", 0)
    if not later and not skipped:
        return None
    return (
        f"attribution: {counts.get('searches', 0)} searches; {skipped} new sockets not searched "
        f"at once (too many at a time), {later} searched on after the answer, "
        f"{counts.get('found_after_answer', 0)} of them found"
    )


def describe_tcp(tcp: dict[str, Any]) -> str | None:
    """What the TCP client limits did, or None when they never had to act."""
    acts = {
        "closed_idle_for_new": "closed {} idle to make room",
        "refused_at_limit": "refused {} with none idle",
        "closed_stalled": "closed {} that did not read their answers",
    }
    done = [words.format(tcp[key]) for key, words in acts.items() if tcp.get(key)]
    errors = ", ".join(f"{kind} {count}" for kind, count in tcp.get("accept_errors", {}).items())
    if errors:
        done.append(f"failed to accept ({errors})")
    if not done:
        return None
    acted = ", ".join(done)
    return f"TCP clients: {tcp.get('clients', 0)} open, at most {tcp.get('limit')}; {acted}"


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
