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
    it, and that entry's purpose, what blocking it breaks, and the evidence.

    Exits 1 when NAME is blocked and 0 otherwise, so scripts can test it.
    """
    from aidns.resolver.rules.inspection import check_name

    verdict = check_name(command_settings(ctx, config, data_dir), name)
    if as_json:
        typer.echo(json.dumps(verdict.as_json(), indent=2))
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
        if verdict.paused_until is not None:
            until = (
                "you resume" if verdict.paused_until == float("inf") else when(verdict.paused_until)
            )
            typer.echo(f"  blocking is paused until {until}: the server forwards everything")
    if verdict.verdict == "blocked":
        raise typer.Exit(1)
