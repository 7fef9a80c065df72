"""`aidns hosts print|apply|remove`: the sinkholed names in the hosts file, without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aidns.cli.errors import reports_errors
from aidns.cli.options import ConfigOption, DataDirOption
from aidns.resolver.errors import AidnsError
from aidns.resolver.system.hostsfile import (
    CacheFlush,
    HostsChange,
    HostsUpdate,
    apply_to_hosts_file,
    entries_from_config,
    hosts_lines,
    remove_from_hosts_file,
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


@hosts_app.command("print")
@reports_errors
def print_hosts(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Print the hosts-file block (0.0.0.0 and :: lines) for every name aidns would sinkhole."""
    for line in hosts_lines(entries_from_config(config, data_dir)):
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


def _report_flush(update: HostsUpdate, flush: bool) -> None:
    if update.flush is CacheFlush.NOT_NEEDED and flush:
        typer.echo("nothing to flush here: lookups read the hosts file as it is now")
    elif update.flush is CacheFlush.SUGGESTED:
        line = "; ".join(f"sudo {shell_line(command)}" for command in update.flush_commands)
        typer.echo(f"to make the system forget answers it cached: {line} (or add --flush)")
    elif update.flush is CacheFlush.FAILED:
        raise AidnsError(update.flush_error)
    elif update.flush is CacheFlush.FLUSHED:
        typer.echo("flushed the DNS cache")


def apply(
    hosts_file: HostsFileOption = None,
    flush: FlushOption = False,
    dry_run: DryRunOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Write the sinkholed names into the hosts file, between aidns's begin and end lines."""
    update = apply_to_hosts_file(
        hosts_file, config_path=config, data_dir=data_dir, flush=flush, dry_run=dry_run
    )
    entries = update.entries
    what = f"aidns block with {len(entries.names)} names"
    _report(update.change, what, f"the {what} is there already", dry_run)
    if entries.process_scoped:
        typer.echo(
            f"not in a hosts file: {len(entries.process_scoped)} rule(s) for some programs "
            "only (see the block's comments); they need the running server"
        )
    for note in entries.notes:
        typer.echo(note, err=True)
    _report_flush(update, flush)


def remove(
    hosts_file: HostsFileOption = None,
    flush: FlushOption = False,
    dry_run: DryRunOption = False,
) -> None:
    """Take aidns's block out of the hosts file, leaving the file as it was before `apply`."""
    update = remove_from_hosts_file(hosts_file, flush=flush, dry_run=dry_run)
    _report(update.change, "aidns block removed", "there is no aidns block", dry_run)
    _report_flush(update, flush)


hosts_app.command("apply")(reports_errors(apply))
hosts_app.command("remove")(reports_errors(remove))
