"""`aidns serve`: run the resolver in the foreground."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from aidns.cli.options import ConfigOption, DataDirOption

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve(
    listen: Annotated[
        list[str] | None,
        typer.Option(
            help="ADDR:PORT to answer on, UDP and TCP; repeatable. "
            "[default: 127.0.0.1:53, [::1]:53]"
        ),
    ] = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            help="IP[:PORT], udp://, tcp://, tls://HOST[:853][#name] or https://HOST/dns-query; "
            "repeatable. [default: the system's nameservers, remembered]"
        ),
    ] = None,
    bootstrap: Annotated[
        list[str] | None,
        typer.Option(
            help="DNS server by IP that finds upstreams given by name; repeatable. "
            "[default: the upstreams given by IP, else the system's nameservers]"
        ),
    ] = None,
    allow_net: Annotated[
        list[str] | None,
        typer.Option(help="CIDR besides loopback that may query; repeatable."),
    ] = None,
    block_response: Annotated[
        str | None,
        typer.Option(help="null | nxdomain | refused | <IPv4>,<IPv6>  [default: null]"),
    ] = None,
    cache_size: Annotated[
        int | None, typer.Option(help="Cache entries; 0 turns it off. [default: 20000]")
    ] = None,
    upstream_timeout: Annotated[float | None, typer.Option(help="Seconds. [default: 2]")] = None,
    upstream_ca: Annotated[
        Path | None,
        typer.Option(help="CA bundle to verify DoT/DoH upstreams. [default: the system's]"),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug | info | warning | error  [default: info]")
    ] = None,
    query_log: Annotated[
        bool | None,
        typer.Option("--query-log/--no-query-log", help="Log every query in SQLite. [default: on]"),
    ] = None,
    query_log_jsonl: Annotated[
        str | None,
        typer.Option(help='Also write each query as a JSON line to this file, or "-" for stdout.'),
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    check: Annotated[
        bool, typer.Option("--check", help="Print the effective settings and lists, then exit.")
    ] = False,
) -> None:
    """Answer DNS on the listen addresses: sinkhole listed names, forward and cache the rest."""
    from aidns.resolver.app import Resolver, ensure_data_dir
    from aidns.resolver.config import Settings, load_settings

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)

    def settings_now() -> Settings:
        return load_settings(
            config_path=config,
            data_dir=data_dir,
            listen=listen or (),
            upstream=upstream or (),
            bootstrap=bootstrap or (),
            allow_net=allow_net or (),
            block_response=block_response,
            cache_size=cache_size,
            upstream_timeout_s=upstream_timeout,
            upstream_ca=upstream_ca,
            log_level=log_level,
            query_log=query_log,
            query_log_jsonl=query_log_jsonl,
        )

    try:
        settings = settings_now()
        logging.getLogger().setLevel(settings.log_level.upper())
        if check:
            resolver = Resolver(settings)
            for line in [*settings.describe(), resolver.describe_lists()]:
                typer.echo(line)
            return
        ensure_data_dir(settings.data_dir)
        asyncio.run(Resolver(settings, reload_settings=settings_now).run())
    except KeyboardInterrupt:
        pass
