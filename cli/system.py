"""`aidns install`, `uninstall`, `setup-dns` and `doctor`: aidns as the system's resolver."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from aidns.cli.options import ConfigOption, DataDirOption
from aidns.resolver.system.checks import healthy
from aidns.resolver.system.dnsmodes import parse_mode
from aidns.resolver.system.doctor import run_doctor
from aidns.resolver.system.install import install_service, uninstall_service
from aidns.resolver.system.setupdns import Report, revert_dns, setup_dns
from aidns.resolver.system.sysfiles import Machine

RootOption = Annotated[
    Path,
    typer.Option(
        "--root",
        help="Change the system tree under this directory instead of / (an image, or a test); "
        "commands that act on a running system are then not run.",
    ),
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show what would change.")]
ListenOption = Annotated[
    list[str] | None,
    typer.Option(help="aidns's ADDR:PORT, as given to `serve`; repeatable. [default: config]"),
]
UpstreamOption = Annotated[
    list[str] | None,
    typer.Option(help="Upstream server, as given to `serve`; repeatable. [default: config]"),
]


def install(
    root: RootOption = Path("/"),
    executable: Annotated[
        str | None,
        typer.Option(help="The aidns command the service runs. [default: this one]"),
    ] = None,
    dry_run: DryRunOption = False,
) -> None:
    """Install and start the service that runs `aidns serve` at boot (systemd or launchd)."""
    install_service(root, sys.platform, executable, dry_run=dry_run, say=typer.echo)


def uninstall(
    root: RootOption = Path("/"),
    force: Annotated[
        bool,
        typer.Option("--force", help="Even while setup-dns points the system at aidns."),
    ] = False,
    dry_run: DryRunOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Stop and remove the service; aidns's config and data stay."""
    uninstall_service(
        root,
        sys.platform,
        config_path=config,
        data_dir=data_dir,
        force=force,
        dry_run=dry_run,
        say=typer.echo,
    )


def setup_dns_command(
    mode: Annotated[
        str | None,
        typer.Option(
            help="resolv.conf | systemd-resolved | networkmanager | macos. "
            "[default: whatever manages the system's resolver]"
        ),
    ] = None,
    direct: Annotated[
        bool,
        typer.Option(
            "--direct",
            help="systemd-resolved: turn its stub off and name aidns in /etc/resolv.conf, so "
            "programs ask aidns themselves and can be named (see the README for what you lose).",
        ),
    ] = False,
    revert: Annotated[
        bool, typer.Option("--revert", help="Undo what setup-dns changed, exactly.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Even when nothing answers on aidns's addresses.")
    ] = False,
    dry_run: DryRunOption = False,
    listen: ListenOption = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(help="The upstream aidns should keep. [default: the system's nameservers]"),
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    root: RootOption = Path("/"),
) -> None:
    """Make the system resolve through aidns, keeping its nameservers as aidns's upstreams."""
    machine = Machine(root, sys.platform)
    if revert:
        report = revert_dns(machine, config_path=config, data_dir=data_dir, dry_run=dry_run)
    else:
        report = setup_dns(
            machine,
            config_path=config,
            data_dir=data_dir,
            listen=listen or (),
            upstream=upstream or (),
            mode=parse_mode(mode) if mode is not None else None,
            direct=direct,
            dry_run=dry_run,
            force=force,
        )
    _print(report)


def _print(report: Report) -> None:
    for line in report.lines:
        typer.echo(line)


def doctor(
    listen: ListenOption = None,
    upstream: UpstreamOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    root: RootOption = Path("/"),
) -> None:
    """Check that the system resolves through aidns and that aidns works; exit 1 if not."""
    checks = run_doctor(
        Machine(root, sys.platform),
        config_path=config,
        data_dir=data_dir,
        listen=listen or (),
        upstream=upstream or (),
    )
    for check in checks:
        typer.echo(check.line())
    raise typer.Exit(0 if healthy(checks) else 1)
