"""`aidns optout [TOOL]`: how to turn a tool's telemetry off at the source, ready to paste."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from aidns.cli import completion
from aidns.cli.options import ConfigOption, DataDirOption, JsonOption, command_settings


def optout(
    ctx: typer.Context,
    tool: Annotated[
        str | None,
        typer.Argument(
            help="A tool, as `aidns who` names it. [default: every tool with an opt-out]",
            autocompletion=completion.tool_names,
        ),
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """The environment variables that turn a tool's telemetry off, one `export` line each,
    ready to paste into a shell profile; other settings as comments. Says which tools the
    query log has seen on this machine, and lists those first.
    """
    from aidns.resolver.procinfo.optout import conflicts, optout_advice, shell_script

    advice = optout_advice(command_settings(ctx, config, data_dir), tool)
    if as_json:
        typer.echo(json.dumps(advice.as_json(), indent=2))
        return
    if advice.log_problem:
        typer.echo(f"# {advice.log_problem}")
    elif advice.seen:
        seen = ", ".join(f"{t.name} ({t.queries} queries)" for t in advice.seen)
        typer.echo(f"# the query log shows these tools on this machine: {seen}")
    else:
        typer.echo("# the query log shows no known tool on this machine yet")
    typer.echo("")
    for line in shell_script(advice.tools):
        typer.echo(line)
    clashes = conflicts(advice.tools)
    if clashes:
        typer.echo("")
        for clash in clashes:
            typer.echo(f"# note: {clash}; keep the value of the tool you use")
