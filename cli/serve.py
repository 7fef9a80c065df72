"""`aidns serve`: run the resolver in the foreground."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from aidns.cli import launch
from aidns.cli.options import ConfigOption, DataDirOption
from aidns.resolver.config import LOG_FORMAT

ListenOption = Annotated[
    list[str] | None,
    typer.Option(
        metavar="ADDR:PORT",
        help="ADDR:PORT to answer on, UDP and TCP; repeatable. [default: 127.0.0.1:53, [::1]:53]",
    ),
]
UpstreamOption = Annotated[
    list[str] | None,
    typer.Option(
        metavar="UPSTREAM",
        help="IP[:PORT], udp://, tcp://, tls://HOST[:853][#name] or https://HOST/dns-query; "
        "repeatable. [default: the system's nameservers, remembered]",
    ),
]
BootstrapOption = Annotated[
    list[str] | None,
    typer.Option(
        metavar="IP[:PORT]",
        help="DNS server by IP that finds upstreams given by name; repeatable. "
        "[default: the upstreams given by IP, else the system's nameservers]",
    ),
]
AllowNetOption = Annotated[
    list[str] | None,
    typer.Option(metavar="CIDR", help="CIDR besides loopback that may query; repeatable."),
]
BlockResponseOption = Annotated[
    str | None, typer.Option(help="null | nxdomain | refused | <IPv4>,<IPv6>  [default: null]")
]
CacheSizeOption = Annotated[
    int | None, typer.Option(help="Cache entries; 0 turns it off. [default: 20000]")
]
UpstreamTimeoutOption = Annotated[float | None, typer.Option(help="Seconds. [default: 2]")]
UpstreamCaOption = Annotated[
    Path | None,
    typer.Option(help="CA bundle to verify DoT/DoH upstreams. [default: the system's]"),
]
LogLevelOption = Annotated[
    str | None, typer.Option(help="debug | info | warning | error  [default: info]")
]
QueryLogOption = Annotated[
    bool | None,
    typer.Option("--query-log/--no-query-log", help="Log every query in SQLite. [default: on]"),
]
QueryLogJsonlOption = Annotated[
    str | None,
    typer.Option(help='Also write each query as a JSON line to this file, or "-" for stdout.'),
]
CheckOption = Annotated[
    bool, typer.Option("--check", help="Print the effective settings and lists, then exit.")
]


def serve(
    listen: ListenOption = None,
    upstream: UpstreamOption = None,
    bootstrap: BootstrapOption = None,
    allow_net: AllowNetOption = None,
    block_response: BlockResponseOption = None,
    cache_size: CacheSizeOption = None,
    upstream_timeout: UpstreamTimeoutOption = None,
    upstream_ca: UpstreamCaOption = None,
    log_level: LogLevelOption = None,
    query_log: QueryLogOption = None,
    query_log_jsonl: QueryLogJsonlOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    check: CheckOption = False,
) -> None:
    """Answer DNS on the listen addresses: sinkhole listed names, forward and cache the rest."""
    options = {
        "listen": listen,
        "upstream": upstream,
        "bootstrap": bootstrap,
        "allow_net": allow_net,
        "block_response": block_response,
        "cache_size": cache_size,
        "upstream_timeout": upstream_timeout,
        "upstream_ca": upstream_ca,
        "log_level": log_level,
        "query_log": query_log,
        "query_log_jsonl": query_log_jsonl,
        "config": config,
        "data_dir": data_dir,
    }
    if not check:
        launch.serve(options)  # what `aidns serve` runs when argparse could read its options
        return
    from aidns.resolver.start import describe_serving

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)
    for line in describe_serving(launch.settings_loader(options)):
        typer.echo(line)
