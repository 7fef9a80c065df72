"""`aidns check NAME`: what aidns does with a name, which rule and list decide it, and why."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from aidns.cli.options import ConfigOption, DataDirOption, JsonOption, command_settings
from aidns.cli.table import when


def check(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A domain name, e.g. telemetry.lmstudio.ai.")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Blocked, allowed, watched or forwarded: the verdict for NAME, the rule and list behind
    it, that entry's purpose, what blocking it breaks, and the evidence, and how to turn the
    tools behind the name off at the source (`aidns optout`).

    Exits 1 when NAME is blocked and 0 otherwise, so scripts can test it.
    """
    from aidns.resolver.procinfo.optout import optouts_for
    from aidns.resolver.rules.inspection import check_name

    settings = command_settings(ctx, config, data_dir)
    verdict = check_name(settings, name)
    entries = [verdict.entry] if verdict.entry else [m.entry for m in verdict.matches if m.entry]
    optouts = optouts_for(settings, (tool for entry in entries if entry for tool in entry.tools))
    if as_json:
        typer.echo(
            json.dumps({**verdict.as_json(), "optout": [o.as_json() for o in optouts]}, indent=2)
        )
    else:
        decision, entry = verdict.decision, verdict.entry
        typer.echo(f"{verdict.name}: {verdict.verdict}")
        if decision is None:
            typer.echo("  no rule that is on names it: aidns forwards it to the upstream")
        else:
            typer.echo(f"  rule: {decision.rule} (list {decision.list_name})")
        if entry is not None and (entry.purpose or entry.breaks):
            facts = [f"purpose: {entry.purpose or 'unknown'}"]
            if entry.breaks:
                facts.append(f"breaks if blocked: {entry.breaks}")
            if not entry.verified:
                facts.append("unverified")
            typer.echo(f"  {'; '.join(facts)}")
        for key, text in (("evidence", entry.evidence), ("note", entry.note)) if entry else ():
            if text:
                typer.echo(f"  {key}: {text}")
        for match in verdict.matches:
            if decision and (match.list_name, match.rule) == (decision.list_name, decision.rule):
                continue
            state = "" if match.enabled else ", which is off"
            typer.echo(f"  also: {match.action} {match.rule} (list {match.list_name}{state})")
        for rule in verdict.surgical:
            typer.echo(f"  surgical rule: {rule}")
        for advice in optouts:
            seen = f", seen {advice.queries} times in the query log" if advice.queries else ""
            typer.echo(f"  turn it off at the source ({advice.name}{seen}):")
            for item in advice.optout:
                typer.echo(f"    {item.shell_line()}")
        if verdict.paused_until is not None:
            until = (
                "you resume" if verdict.paused_until == float("inf") else when(verdict.paused_until)
            )
            typer.echo(f"  blocking is paused until {until}: the server forwards everything")
    if verdict.verdict == "blocked":
        raise typer.Exit(1)
