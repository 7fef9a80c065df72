"""`aidns serve`: run the resolver in the foreground."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import typer

from aidns.resolver.errors import AidnsError

ConfigOption = typer.Option(None, "--config", envvar="AIDNS_CONFIG", help="Config file (YAML).")
DataDirOption = typer.Option(None, "--data-dir", envvar="AIDNS_DATA_DIR", help="Where aidns keeps its state.")


def serve(
    listen: list[str] = typer.Option(
        [], "--listen", help="ADDR:PORT to answer on, UDP and TCP; repeatable. [default: 127.0.0.1:53, [::1]:53]"
    ),
    upstream: list[str] = typer.Option(
        [],
        "--upstream",
        help="IP[:PORT], udp://, tcp://, tls://HOST[:853][#name] or https://HOST/dns-query; repeatable. "
        "[default: the system's nameservers, remembered]",
    ),
    allow_net: list[str] = typer.Option([], "--allow-net", help="CIDR besides loopback that may query; repeatable."),
    block_response: str | None = typer.Option(
        None, "--block-response", help="null | nxdomain | refused | <IPv4>,<IPv6>  [default: null]"
    ),
    cache_size: int | None = typer.Option(None, "--cache-size", help="Cache entries; 0 turns it off. [default: 20000]"),
    upstream_timeout: float | None = typer.Option(None, "--upstream-timeout", help="Seconds. [default: 2]"),
    log_level: str | None = typer.Option(None, "--log-level", help="debug | info | warning | error [default: info]"),
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDirOption,
    check: bool = typer.Option(False, "--check", help="Print the effective settings and lists, then exit."),
) -> None:
    """Answer DNS on the listen addresses: sinkhole listed names, forward and cache the rest."""
    from aidns.resolver.config import load_settings
    from aidns.resolver.service import Resolver, ensure_data_dir

    logging.basicConfig(
        stream=sys.stderr,
        level=(log_level or "info").upper() if (log_level or "info").lower() in ("debug", "info", "warning", "error") else "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings(
            config_path=config,
            data_dir=data_dir,
            listen=listen,
            upstream=upstream,
            allow_net=allow_net,
            block_response=block_response,
            cache_size=cache_size,
            upstream_timeout_s=upstream_timeout,
            log_level=log_level,
        )
        logging.getLogger().setLevel(settings.log_level.upper())
        if check:
            resolver = Resolver(settings)
            for line in [*settings.describe(), resolver.describe_lists()]:
                typer.echo(line)
            return
        ensure_data_dir(settings.data_dir)
        resolver = Resolver(settings)
        asyncio.run(resolver.run())
    except AidnsError as exc:
        typer.echo(f"aidns: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass
