"""Reading the query log: search, follow, `who asked` and top lists, for the CLI and the API.

Nothing here prints: each function returns rows as dicts of the `queries` columns.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aidns.resolver.errors import ConfigError
from aidns.resolver.querylog.schema import DB_NAME, connect, subtree_range

VERDICTS = ("blocked", "allowed", "watched", "forwarded", "cached", "refused", "error")
TOP_KINDS = ("domain", "process", "tool", "blocked")
DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, *, option: str, now: float | None = None) -> float:
    """`90s`, `15m`, `1h`, `2d`, `1w` ago, an ISO date or date-time, or Unix seconds."""
    now = time.time() if now is None else now
    value = text.strip().lower()
    found = DURATION.match(value)
    if found:
        return now - float(found.group(1)) * UNITS_S[found.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ConfigError(
            f"{option}: {text!r} is not a time; use e.g. 30m, 2h, 1d, 2026-11-29 "
            "or 2026-11-29T08:00"
        ) from None


@dataclass(frozen=True, slots=True)
class LogFilter:
    domain: str | None = None
    process: str | None = None
    tool: str | None = None
    verdict: str | None = None
    client: str | None = None
    since: float | None = None
    until: float | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        values: list[Any] = []
        if self.client:
            clauses.append("client = ?")
            values.append(self.client)
        if self.domain:
            exact, low, high = subtree_range(self.domain)
            clauses.append("(rname = ? OR (rname >= ? AND rname < ?))")
            values += [exact, low, high]
        if self.process:
            clauses.append("(process = ? OR exe = ? OR CAST(pid AS TEXT) = ?)")
            values += [self.process] * 3
        if self.tool:
            clauses.append("tool = ?")
            values.append(self.tool)
        if self.verdict:
            if self.verdict not in VERDICTS:
                raise ConfigError(
                    f"--verdict: {self.verdict!r} is not one of {', '.join(VERDICTS)}"
                )
            clauses.append("verdict = ?")
            values.append(self.verdict)
        if self.since is not None:
            clauses.append("ts >= ?")
            values.append(self.since)
        if self.until is not None:
            clauses.append("ts < ?")
            values.append(self.until)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), values


TABLE_WAIT_S = 2.0  # a new file gets its table within moments of appearing


class QueryLogReader:
    """Read-only access to `<data-dir>/queries.db`, safe while the server writes to it."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise ConfigError(
                f"no query log at {path} yet: it appears once `aidns serve` has answered a query "
                "(check --data-dir)"
            )
        deadline = time.monotonic() + TABLE_WAIT_S
        while True:
            try:
                self.connection = connect(path, readonly=True)
                self.connection.execute("SELECT 1 FROM queries LIMIT 1")
                return
            except sqlite3.Error as exc:
                if "no such table" in str(exc) and time.monotonic() < deadline:
                    self.connection.close()  # the writer is making the file right now
                    time.sleep(0.05)
                    continue
                raise ConfigError(f"cannot read the query log: {exc}", source=str(path)) from None

    def _rows(self, sql: str, values: list[Any]) -> list[dict[str, Any]]:
        try:
            return [dict(row) for row in self.connection.execute(sql, values)]
        except sqlite3.Error as exc:
            raise ConfigError(f"reading the query log failed: {exc}") from None

    def search(
        self, log_filter: LogFilter, limit: int = 50, after_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; with `after_id`, only newer rows, oldest first (for --follow)."""
        where, values = log_filter.where()
        if after_id is not None:
            where += (" AND " if where else " WHERE ") + "id > ?"
            values.append(after_id)
            return self._rows(f"SELECT * FROM queries{where} ORDER BY id LIMIT ?", [*values, limit])
        return self._rows(
            f"SELECT * FROM queries{where} ORDER BY id DESC LIMIT ?", [*values, limit]
        )

    def follow(self, log_filter: LogFilter, poll_s: float = 0.5) -> Iterator[dict[str, Any]]:
        last = self._rows("SELECT coalesce(max(id), 0) AS id FROM queries", [])[0]["id"]
        while True:
            rows = self.search(log_filter, limit=1000, after_id=last)
            yield from rows
            if rows:
                last = rows[-1]["id"]
            else:
                time.sleep(poll_s)

    def who(self, name: str, since: float | None = None) -> list[dict[str, Any]]:
        """The processes that looked `name` or a name below it up, busiest first."""
        where, values = LogFilter(domain=name, since=since).where()
        return self._rows(
            "SELECT process, tool, exe, pid, user, uid, note, sum(count) AS count,"
            " min(ts) AS first, max(ts) AS last, group_concat(DISTINCT name) AS names,"
            " group_concat(DISTINCT verdict) AS verdicts"
            f" FROM queries{where} GROUP BY process, tool, exe, uid ORDER BY count DESC, last DESC",
            values,
        )

    def askers(self, name: str) -> list[dict[str, Any]]:
        """Each name under `name` with each process that looked it up, for surgical blocks."""
        where, values = LogFilter(domain=name).where()
        return self._rows(
            "SELECT name, process, tool, max(exe) AS exe, max(pid) AS pid, max(relay) AS relay,"
            " sum(count) AS count"
            f" FROM queries{where} GROUP BY name, process, tool ORDER BY name",
            values,
        )

    def top(self, by: str, since: float | None = None, limit: int = 20) -> list[dict[str, Any]]:
        if by not in TOP_KINDS:
            raise ConfigError(f"--by: {by!r} is not one of {', '.join(TOP_KINDS)}")
        log_filter = LogFilter(since=since, verdict="blocked" if by == "blocked" else None)
        where, values = log_filter.where()
        column = {"domain": "name", "blocked": "name", "process": "process", "tool": "tool"}[by]
        return self._rows(
            f"SELECT {column} AS key, sum(count) AS count, count(DISTINCT name) AS names,"
            " count(DISTINCT process) AS processes, max(ts) AS last"
            f" FROM queries{where} GROUP BY {column} ORDER BY count DESC LIMIT ?",
            [*values, limit],
        )

    def tools_seen(self, since: float | None = None) -> list[dict[str, Any]]:
        """Each tool the log names, with its queries and the last time, busiest first."""
        where, values = LogFilter(since=since).where()
        where += (" AND " if where else " WHERE ") + "tool IS NOT NULL"
        return self._rows(
            "SELECT tool, sum(count) AS count, max(ts) AS last"
            f" FROM queries{where} GROUP BY tool ORDER BY count DESC, tool",
            values,
        )

    def close(self) -> None:
        self.connection.close()


def search(data_dir: Path, log_filter: LogFilter, limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` queries that pass `log_filter`, newest first."""
    with closing(QueryLogReader(data_dir / DB_NAME)) as reader:
        return reader.search(log_filter, limit)


def follow(
    data_dir: Path, log_filter: LogFilter, limit: int = 50, poll_s: float = 0.5
) -> tuple[list[dict[str, Any]], Iterator[dict[str, Any]]]:
    """Like tail -f: the newest `limit` queries oldest first, then every query written after
    the first look at the iterator, as it comes; the iterator looks every `poll_s` forever."""
    reader = QueryLogReader(data_dir / DB_NAME)
    try:
        rows = reader.search(log_filter, limit)
    except BaseException:
        reader.close()
        raise
    rows.reverse()
    return rows, _then_close(reader, reader.follow(log_filter, poll_s))


def _then_close(reader: QueryLogReader, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    try:
        yield from rows
    finally:
        reader.close()


def who(data_dir: Path, name: str, since: float | None = None) -> list[dict[str, Any]]:
    """The processes that looked `name` or a name below it up, busiest first."""
    with closing(QueryLogReader(data_dir / DB_NAME)) as reader:
        return reader.who(name, since)


def top(
    data_dir: Path, by: str, since: float | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The busiest names, processes or tools (`by`), or the most blocked names."""
    with closing(QueryLogReader(data_dir / DB_NAME)) as reader:
        return reader.top(by, since, limit)


def tools_seen(data_dir: Path, since: float | None = None) -> list[dict[str, Any]]:
    """The tools the query log names (`tool`, `count`, `last`), busiest first."""
    with closing(QueryLogReader(data_dir / DB_NAME)) as reader:
        return reader.tools_seen(since)
