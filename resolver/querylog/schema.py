"""The query log's SQLite schema: the file name, the table and its columns, and name ranges."""

from __future__ import annotations

import sqlite3
from pathlib import Path

DB_NAME = "queries.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    client TEXT,
    client_port INTEGER,
    protocol TEXT,
    pid INTEGER,
    process TEXT,
    exe TEXT,
    cmdline TEXT,
    tool TEXT,
    uid INTEGER,
    user TEXT,
    name TEXT NOT NULL,
    qtype TEXT,
    verdict TEXT NOT NULL,
    rule TEXT,
    list TEXT,
    rcode TEXT,
    answer TEXT,
    upstream TEXT,
    latency_ms REAL,
    note TEXT,
    relay INTEGER,
    rname TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queries_ts ON queries(ts);
CREATE INDEX IF NOT EXISTS queries_rname ON queries(rname, ts);
"""
COLUMNS = (
    *(
        "ts",
        "count",
        "client",
        "client_port",
        "protocol",
        "pid",
        "process",
        "exe",
        "cmdline",
        "tool",
    ),
    *("uid", "user", "name", "qtype", "verdict", "rule", "list", "rcode", "answer", "upstream"),
    *("latency_ms", "note", "relay"),
)
INSERT_ROW = "INSERT INTO queries ({}, rname) VALUES ({})".format(
    ", ".join(COLUMNS), ", ".join("?" * (len(COLUMNS) + 1))
)


def reversed_name(name: str) -> str:
    """`o1.ingest.sentry.io` -> `io.sentry.ingest.o1`, so a subtree is a range of the index."""
    return ".".join(reversed(name.split(".")))


def subtree_range(name: str) -> tuple[str, str, str]:
    """(exact, low, high) reversed-name bounds covering `name` and every name below it."""
    exact = reversed_name(name.strip().rstrip(".").lower())
    return exact, exact + ".", exact + "/"  # "/" sorts right after "."


def connect(path: Path, *, readonly: bool = False, timeout_s: float = 5.0) -> sqlite3.Connection:
    """A connection with the schema in place (read-write) or a read-only one for the commands."""
    if readonly:
        uri = f"{path.absolute().as_uri()}?mode=ro"  # a path with ? or # in it stays a path
        connection = sqlite3.connect(uri, uri=True, timeout=timeout_s)
        connection.row_factory = sqlite3.Row
        return connection
    connection = sqlite3.connect(path, timeout=timeout_s, check_same_thread=False)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(SCHEMA)
    except sqlite3.Error:
        connection.close()  # not left open on a file that is about to be moved aside
        raise
    return connection
