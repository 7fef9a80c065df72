"""`aidns hosts print|apply|remove`: the sinkholed names in the hosts file, without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aidns.cli.errors import reports_errors
from aidns.cli.options import ConfigOption, DataDirOption
from aidns.resolver.config import load_settings
from aidns.resolver.errors import AidnsError
from aidns.resolver.system.hostsfile import (
    HostsChange,
    HostsEntries,
    apply_hosts,
    default_hosts_path,
    flush_cache,
    flush_commands,
    hosts_lines,
    remove_hosts,
    sinkhole_entries,
)
from aidns.resolver.system.sysfiles import shell_line

hosts_app = typer.Typer(
    name="hosts",
    help="Sinkhole the blocked names through the hosts file: works without a running server.",
    no_args_is_help=True,
)

HostsFileOption = Annotated[
    Path | None,
    typer.Option("--hosts-file", help="The hosts file to change. [default: /etc/hosts]"),
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show what would change.")]
FlushOption = Annotated[
    bool, typer.Option("--flush", help="Also flush the system's DNS cache (macOS).")
]


def _entries(config: Path | None, data_dir: Path | None) -> HostsEntries:
    return sinkhole_entries(load_settings(config_path=config, data_dir=data_dir))


@hosts_app.command("print")
@reports_errors
def print_hosts(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Print the hosts-file block (0.0.0.0 and :: lines) for every name aidns would sinkhole."""
    entries = _entries(config, data_dir)
    for line in hosts_lines(entries):
        typer.echo(line)


def _report(change: HostsChange, what: str, unchanged: str, dry_run: bool) -> None:
    if not change.changed:
        typer.echo(f"{change.path}: {unchanged}; nothing changed")
        return
    verb = "would change" if dry_run else "changed"
    typer.echo(f"{change.path}: {verb}: {what}")
    if change.backup is not None:
        kept = "would keep" if dry_run else "kept"
        typer.echo(f"{kept} the previous file as {change.backup}")
    if change.how == "in place":
        typer.echo(f"{change.path} is a mount point, so it was rewritten in place")


def _flush(flush: bool, changed: bool, dry_run: bool) -> None:
    commands = flush_commands()
    if not commands or not changed or dry_run:
        if flush and not commands:
            typer.echo("nothing to flush here: lookups read the hosts file as it is now")
        return
    line = "; ".join(f"sudo {shell_line(command)}" for command in commands)
    if not flush:
        typer.echo(f"to make the system forget answers it cached: {line} (or add --flush)")
        return
    for result in flush_cache():
        if not result.ok:
            raise AidnsError(f"{shell_line(result.argv)} failed: {result.why()}")
    typer.echo("flushed the DNS cache")


def apply(
    hosts_file: HostsFileOption = None,
    flush: FlushOption = False,
    dry_run: DryRunOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Write the sinkholed names into the hosts file, between aidns's begin and end lines."""
    path = hosts_file or default_hosts_path()
    entries = _entries(config, data_dir)
    change = apply_hosts(path, entries, dry_run=dry_run)
    what = f"aidns block with {len(entries.names)} names"
    _report(change, what, f"the {what} is there already", dry_run)
    if entries.process_scoped:
        typer.echo(
            f"not in a hosts file: {len(entries.process_scoped)} rule(s) for some programs "
            "only (see the block's comments); they need the running server"
        )
    for note in entries.notes:
        typer.echo(note, err=True)
    _flush(flush, change.changed, dry_run)


def remove(
    hosts_file: HostsFileOption = None,
    flush: FlushOption = False,
    dry_run: DryRunOption = False,
) -> None:
    """Take aidns's block out of the hosts file, leaving the file as it was before `apply`."""
    path = hosts_file or default_hosts_path()
    change = remove_hosts(path, dry_run=dry_run)
    _report(change, "aidns block removed", "there is no aidns block", dry_run)
    _flush(flush, change.changed, dry_run)


hosts_app.command("apply")(reports_errors(apply))
hosts_app.command("remove")(reports_errors(remove))
