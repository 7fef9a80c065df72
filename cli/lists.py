"""`aidns lists`: see the lists, turn them on and off, add, update and remove your own.

They read and write files in the data dir, so they work whether or not the server runs; a
running server reloads its lists within a second of a change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from aidns.cli import completion
from aidns.cli.errors import reports_errors
from aidns.cli.options import ConfigOption, DataDirOption, JsonOption, command_settings
from aidns.cli.progress import download_progress
from aidns.cli.table import render, when
from aidns.resolver.errors import ConfigError
from aidns.resolver.rules.lists import ListAction

TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        help="Give up on a server silent for this many seconds (or ten times that in all).",
    ),
]
PROBLEMS_SHOWN = 3

lists_app = typer.Typer(
    name="lists",
    help="The block and watch lists: which there are, which are on, and your own.",
    no_args_is_help=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: no <bool> on flags
    pretty_exceptions_enable=False,
)


@lists_app.callback(invoke_without_command=True)
def lists(
    ctx: typer.Context,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Every list: name, action, on or off (and who said so), entries and how many of them have
    a primary source (EVIDENCED; unverified ones are not counted), source, last update."""
    if ctx.invoked_subcommand is not None:
        return
    from aidns.resolver.rules.inspection import list_infos

    infos, problems = list_infos(command_settings(ctx, config, data_dir))
    if as_json:
        for problem in problems:
            if not any(problem.startswith(info.path) for info in infos):
                typer.echo(f"aidns: {problem}", err=True)
        typer.echo(json.dumps([info.as_json() for info in infos], indent=2))
        return
    rows = [
        {
            "name": info.name,
            "action": "+".join(info.actions),
            "on": ("on" if info.enabled else "off")
            + ("" if info.why == "default" else f" ({info.why})"),
            "entries": info.entries,
            "evidenced": info.evidenced if info.evidenced or info.unverified else "-",
            "source": info.source,
            "updated": when(info.updated) or "-",
        }
        for info in infos
    ]
    columns = [
        ("name", "NAME"),
        ("action", "ACTION"),
        ("on", "ON"),
        ("entries", "ENTRIES"),
        ("evidenced", "EVIDENCED"),
    ]
    typer.echo(render(rows, [*columns, ("source", "SOURCE"), ("updated", "UPDATED")]))
    notes = [p for p in problems if not any(p.startswith(i.path) for i in infos)]
    unverified = [f"{info.name} {info.unverified}" for info in infos if info.unverified]
    if unverified:
        notes.append(
            "unverified entries (no primary source; not counted as evidenced): "
            + ", ".join(unverified)
        )
    for info in infos:
        if info.skipped:
            notes.append(f"{info.name}: {info.skipped} lines skipped, e.g. {info.problems[0]}")
        if info.last_error:
            notes.append(f"{info.name}: the last update failed ({info.last_error})")
    if notes:
        typer.echo("")
        for note in notes:
            typer.echo(note)


def _switch(
    ctx: typer.Context, names: list[str], enabled: bool, config: Path | None, data: Path | None
) -> None:
    """Every name, or none at all when one of them is not a list."""
    from aidns.resolver.rules.catalogue import list_names, set_list_enabled

    settings = command_settings(ctx, config, data)
    known = list_names(settings.list_dirs)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(
            f"no list named {' or '.join(map(repr, unknown))}, so nothing changed; "
            f"the lists are: {', '.join(sorted(known))}"
        )
    for name in names:
        done = set_list_enabled(settings, name, enabled)
        state = "on" if done.enabled else "off"
        was = (
            "it already was"
            if done.was_enabled == done.enabled
            else "it was " + ("on" if done.was_enabled else "off")
        )
        typer.echo(f"{name}: {state} ({was})")
        if done.config_said is not None and done.config_said != done.enabled:
            key = "enable" if done.config_said else "disable"
            typer.echo(f"this overrides `lists: {key}` in {settings.config_path}")


@lists_app.command()
@reports_errors
def enable(
    ctx: typer.Context,
    names: Annotated[
        list[str],
        typer.Argument(
            help="One or more list names, as `aidns lists` shows them.",
            autocompletion=completion.list_names,
        ),
    ],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Turn lists on (kept in <data-dir>/lists.state.yaml; beats the config's `lists:`)."""
    _switch(ctx, names, True, config, data_dir)


@lists_app.command()
@reports_errors
def disable(
    ctx: typer.Context,
    names: Annotated[
        list[str],
        typer.Argument(
            help="One or more list names, as `aidns lists` shows them.",
            autocompletion=completion.list_names,
        ),
    ],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Turn lists off (kept in <data-dir>/lists.state.yaml; beats the config's `lists:`)."""
    _switch(ctx, names, False, config, data_dir)


@lists_app.command()
@reports_errors
def show(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            help="A list name, as `aidns lists` shows it.", autocompletion=completion.list_names
        ),
    ],
    as_json: JsonOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """A list's entries, each with its action, purpose, what blocking it breaks, and evidence."""
    from aidns.resolver.rules.inspection import entry_json, show_list

    info, loaded = show_list(command_settings(ctx, config, data_dir), name)
    entries = [entry_json(rule) for rule in loaded.rules]
    if as_json:
        typer.echo(json.dumps({**info.as_json(), "list": entries}, indent=2))
        return
    state = ("on" if info.enabled else "off") + ("" if info.why == "default" else f" ({info.why})")
    typer.echo(f"{info.name}: {'+'.join(info.actions)}, {state}, {info.entries} entries")
    for line in (info.description, info.homepage and f"homepage: {info.homepage}"):
        if line:
            typer.echo(line)
    typer.echo(
        f"file: {info.path}" + ("" if info.origin == "shipped" else f" (from {info.source})")
    )
    if not entries and info.entries:
        typer.echo(f"\na big list: its {info.entries} names are kept as hashes; see the file")
    for entry in entries:
        typer.echo("")
        typer.echo(_entry_line(entry))
        for key in ("evidence", "note"):
            if entry[key]:
                typer.echo(f"    {key}: {entry[key]}")


def _entry_line(entry: dict[str, Any]) -> str:
    name = ("=" if entry["match"] == "exact" else "") + entry["domain"]
    facts = [entry["purpose"] or "purpose unknown"]
    if entry["breaks"]:
        facts.append(f"breaks: {entry['breaks']}")
    if not entry["verified"]:
        facts.append("unverified")
    return f"{entry['action']:<5}  {name}  ({'; '.join(facts)})"


@lists_app.command()
@reports_errors
def add(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="A local file, or an http:// or https:// URL.")],
    name: Annotated[
        str | None, typer.Option(help="The list's name. [default: from the file or URL]")
    ] = None,
    action: Annotated[
        ListAction | None,
        typer.Option(help="block or watch, for a text list. [default: block]"),
    ] = None,
    timeout: TimeoutOption = 30.0,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Add a list of your own: hosts, AdBlock (||name^), plain names, or aidns YAML.

    A URL is fetched into <data-dir>/lists/ and refreshed by `aidns lists update`; a local
    file is copied there.
    """
    from aidns.resolver.rules.subscriptions import add_list

    with download_progress() as progress:
        done = add_list(
            command_settings(ctx, config, data_dir), source, name, action, timeout, progress
        )
    loaded = done.loaded
    typer.echo(
        f"added {done.name}: {len(loaded)} entries, {'+'.join(map(str, loaded.actions()))}, "
        f"on; from {done.source}, in {done.path}"
    )
    if loaded.skipped:
        typer.echo(f"{loaded.skipped} lines skipped, e.g.:")
        for problem in loaded.problems[:PROBLEMS_SHOWN]:
            typer.echo(f"  {problem}")


@lists_app.command()
@reports_errors
def update(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Lists to refresh. [default: every added list]",
            autocompletion=completion.list_names,
        ),
    ] = None,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 30.0,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Refresh your added lists: conditional requests; a copy that fails is never swapped in.

    Exits 1 when any list failed to refresh (its last good copy stays in use).
    """
    from aidns.resolver.rules.subscriptions import update_lists

    settings = command_settings(ctx, config, data_dir)
    with download_progress() as progress:
        results = update_lists(settings, tuple(names or ()), timeout, progress)
    if as_json:
        typer.echo(json.dumps([result.as_json() for result in results], indent=2))
    elif not results:
        typer.echo("no added lists to update: see `aidns lists add --help`")
    for result in results if not as_json else ():
        line = f"{result.name}: {result.status}, {result.detail}"
        if result.status == "updated" and result.previous is not None:
            line += f" (was {result.previous})"
        if result.status == "failed" and result.kept_from:
            line += f" from {when(result.kept_from)}"
        typer.echo(line)
    if any(result.status == "failed" for result in results):
        raise typer.Exit(1)


@lists_app.command()
@reports_errors
def remove(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="A list you added.", autocompletion=completion.list_names)
    ],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Delete a list from <data-dir>/lists/ (shipped lists can only be disabled)."""
    from aidns.resolver.rules.subscriptions import remove_list

    path = remove_list(command_settings(ctx, config, data_dir), name)
    typer.echo(f"removed {name} ({path})")
