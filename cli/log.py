"""`aidns log`, `aidns who` and `aidns top`: read the query log, running server or not."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

import typer

from aidns.cli import completion
from aidns.cli.options import ConfigOption, DataDirOption
from aidns.cli.table import moments, render, when
from aidns.resolver.config import resolve_data_dir
from aidns.resolver.errors import ConfigError
from aidns.resolver.querylog import reader as querylog
from aidns.resolver.querylog.reader import LogFilter, parse_time
from aidns.resolver.querylog.schema import COLUMNS

SinceOption = Annotated[
    str | None, typer.Option(help="Only since then: 30m, 2h, 1d, or a date/time.")
]
LOG_COLUMNS = [
    ("ts", "time"),
    ("count", "n"),
    ("client", "client"),
    ("process", "process"),
    ("tool", "tool"),
    ("name", "name"),
    ("qtype", "type"),
    ("verdict", "verdict"),
    ("list", "list"),
    ("answer", "answer"),
]


def _verdict_colour(row: dict[str, Any]) -> str | None:
    return {"watched": "yellow", "blocked": "red"}.get(str(row.get("verdict")))


FOLLOW_WIDTHS = [19, 5, 15, 15, 12, 40, 5, 9, 14, 30]  # what `--follow` keeps to, row by row


def _readable(rows: list[dict[str, Any]], dated: bool = False) -> list[dict[str, Any]]:
    times = (
        moments([row.get("ts") for row in rows])
        if not dated
        else [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["ts"])) for row in rows]
    )
    shown = []
    for row, moment in zip(rows, times, strict=True):
        readable = dict(row)
        readable["ts"] = moment
        if row.get("verdict") == "watched":
            readable["verdict"] = "WATCHED"
        shown.append(readable)
    return shown


def _with_time(row: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """The row's fields, and `time`: its moment in ISO 8601 with the UTC offset."""
    picked = {key: row.get(key) for key in fields}
    picked["time"] = (
        datetime.fromtimestamp(row["ts"]).astimezone().isoformat(timespec="milliseconds")
    )
    return picked


def log(
    domain: Annotated[str | None, typer.Option(help="This name and every name below it.")] = None,
    process: Annotated[
        str | None, typer.Option(help="Process name, executable path or pid.")
    ] = None,
    tool: Annotated[
        str | None,
        typer.Option(help="Tool name, e.g. ollama.", autocompletion=completion.tool_names),
    ] = None,
    client: Annotated[
        str | None, typer.Option(help="Client address, e.g. 192.168.1.20 (with --allow-net).")
    ] = None,
    verdict: Annotated[
        str | None,
        typer.Option(help="blocked, allowed, watched, forwarded, cached, refused, error."),
    ] = None,
    since: SinceOption = None,
    until: Annotated[str | None, typer.Option(help="Only before then.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header line.")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new queries.")
    ] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """The queries aidns answered, newest first; watched names (cloud AI APIs) stand out.

    Identical queries from one process within a second share a row; `n` counts them.
    """
    if as_json and as_csv:
        raise ConfigError("--json and --csv: choose one")
    log_filter = LogFilter(
        domain=domain,
        process=process,
        tool=tool,
        verdict=verdict,
        client=client,
        since=parse_time(since, option="--since") if since else None,
        until=parse_time(until, option="--until") if until else None,
    )
    data = resolve_data_dir(config, data_dir)
    newer: Iterator[dict[str, Any]] = iter(())
    if follow:  # like tail -f: oldest at the top, new rows appended below
        rows, newer = querylog.follow(data, log_filter, limit)
    else:
        rows = querylog.search(data, log_filter, limit)
    fields = ["id", *COLUMNS, "time"]
    writer = csv.DictWriter(sys.stdout, fields, extrasaction="ignore") if as_csv else None
    if writer is not None:
        writer.writeheader()

    def emit(batch: list[dict[str, Any]], header: bool) -> None:
        if as_json:
            for row in batch:
                typer.echo(json.dumps(_with_time(row, fields[:-1])))
        elif writer is not None:
            writer.writerows(_with_time(row, fields[:-1]) for row in batch)
            sys.stdout.flush()
        elif batch or header:
            widths = FOLLOW_WIDTHS if follow else None
            table = render(
                _readable(batch, dated=follow),
                LOG_COLUMNS,
                highlight=_verdict_colour,
                widths=widths,
            )
            typer.echo(table if header else "\n".join(table.splitlines()[1:]))

    emit(rows, header=True)
    try:
        for row in newer:
            emit([row], header=False)
    except KeyboardInterrupt:
        pass


def who(
    name: Annotated[str, typer.Argument(help="A name; its subdomains count too.")],
    since: SinceOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Which programs looked NAME up: process, tool, executable, count, first and last seen."""
    data = resolve_data_dir(config, data_dir)
    after = parse_time(since, option="--since") if since else None
    rows = querylog.who(data, name, after)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(
            f"nobody looked up {name} or a name below it" + (" in that time" if since else "")
        )
        return
    shown = [
        {
            **row,
            "process": row["process"] or "(unknown)",
            "first": when(row["first"]),
            "last": when(row["last"]),
        }
        for row in rows
    ]
    columns = [
        ("process", "process"),
        ("tool", "tool"),
        ("exe", "executable"),
        ("user", "user"),
        ("count", "count"),
        ("first", "first seen"),
        ("last", "last seen"),
        ("verdicts", "verdicts"),
        ("note", "note"),
    ]
    typer.echo(render(shown, columns))


def top(
    by: Annotated[str, typer.Option(help="domain, process, tool or blocked.")] = "domain",
    since: SinceOption = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """The busiest names, processes or tools, or the most blocked names."""
    data = resolve_data_dir(config, data_dir)
    after = parse_time(since, option="--since") if since else None
    rows = querylog.top(data, by, after, limit)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    heading = {"domain": "name", "blocked": "blocked name", "process": "process", "tool": "tool"}[
        by
    ]
    shown = [{**row, "key": row["key"] or "(unknown)", "last": when(row["last"])} for row in rows]
    columns = [
        ("key", heading),
        ("count", "queries"),
        ("names", "names"),
        ("processes", "processes"),
    ]
    typer.echo(render(shown, [*columns, ("last", "last seen")]))
