from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from aidns.resolver.errors import ConfigError
from aidns.resolver.query import Action, Decision, ProcessInfo
from aidns.resolver.querylog import reader, schema
from aidns.resolver.querylog.reader import LogFilter
from aidns.resolver.querylog.schema import DB_NAME
from aidns.resolver.querylog.writer import QueryLog, QueryLogConfig
from aidns.resolver.replies import BlockResponse

from .helpers import make_query

OLLAMA = ProcessInfo(pid=100, name="ollama", exe="/usr/local/bin/ollama", uid=1000, tool="ollama")
CURL = ProcessInfo(pid=200, name="curl", exe="/usr/bin/curl", uid=1000)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    querylog = QueryLog(tmp_path / DB_NAME, QueryLogConfig(batch_interval_s=60))
    querylog.start()
    for name, process, action in (
        ("api.openai.com", OLLAMA, Action.WATCHED),
        ("api.openai.com", OLLAMA, Action.WATCHED),
        ("api.openai.com", CURL, Action.WATCHED),
        ("o1.ingest.sentry.io", OLLAMA, Action.BLOCKED),
    ):
        query = make_query(name)
        query.process = process
        query.decision = Decision(action, name if action is Action.BLOCKED else "", "lists")
        query.response = BlockResponse().reply_to(query)
        querylog(query)
    querylog.stop()
    return tmp_path


def test_search_is_newest_first_and_filtered(data_dir: Path) -> None:
    rows = reader.search(data_dir, LogFilter())
    assert [row["name"] for row in rows] == [
        "o1.ingest.sentry.io",
        "api.openai.com",
        "api.openai.com",
    ]
    blocked = reader.search(data_dir, LogFilter(domain="sentry.io", verdict="blocked"))
    assert [(row["process"], row["verdict"]) for row in blocked] == [("ollama", "blocked")]
    assert reader.search(data_dir, LogFilter(), limit=1)[0]["name"] == "o1.ingest.sentry.io"


def test_who_and_top_count_what_was_asked(data_dir: Path) -> None:
    who = reader.who(data_dir, "openai.com")
    assert [(row["process"], row["count"]) for row in who] == [("ollama", 2), ("curl", 1)]
    top = reader.top(data_dir, "process")
    assert [(row["key"], row["count"]) for row in top] == [("ollama", 3), ("curl", 1)]


def test_follow_gives_the_newest_oldest_first_then_each_later_row(data_dir: Path) -> None:
    backlog, newer = reader.follow(data_dir, LogFilter(), limit=2, poll_s=0.01)
    assert [row["name"] for row in backlog] == ["api.openai.com", "o1.ingest.sentry.io"]
    read = threading.Event()

    def write_until_read() -> None:
        connection = sqlite3.connect(data_dir / DB_NAME)
        index = 0
        while not read.wait(0.01):
            with connection:
                connection.execute(
                    "INSERT INTO queries (ts, name, verdict, rname) VALUES (?, ?, ?, ?)",
                    (1.0, f"later{index}.example", "forwarded", f"example.later{index}"),
                )
            index += 1
        connection.close()

    writer = threading.Thread(target=write_until_read)
    writer.start()
    try:
        row = next(newer)
    finally:
        read.set()
        writer.join()
        newer.close()
    assert row["name"].startswith("later")


def test_without_a_log_the_error_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no query log at"):
        reader.who(tmp_path, "x.example")


def test_a_data_dir_whose_path_has_uri_characters_is_read(data_dir: Path, tmp_path: Path) -> None:
    odd = tmp_path / "logs?mode=rw#1"
    odd.mkdir()
    (odd / DB_NAME).write_bytes((data_dir / DB_NAME).read_bytes())
    assert {row["name"] for row in reader.search(odd, LogFilter())} == {
        "api.openai.com",
        "o1.ingest.sentry.io",
    }


def test_a_log_file_caught_before_its_table_exists_is_waited_for(tmp_path: Path) -> None:
    """The writer creates queries.db and then its table; a command in between waits."""
    path = tmp_path / DB_NAME
    sqlite3.connect(path).close()  # an empty database file, as the writer's first step leaves it
    timer = threading.Timer(0.3, lambda: schema.connect(path).close())
    timer.start()
    try:
        assert reader.search(tmp_path, LogFilter()) == []
    finally:
        timer.join()


def test_a_database_that_never_gets_the_table_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DB_NAME) as connection:
        connection.execute("CREATE TABLE other (x)")
    with pytest.raises(ConfigError, match="no such table: queries"):
        reader.search(tmp_path, LogFilter())
