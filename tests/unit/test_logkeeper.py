"""The server's side of the log writer child, with a real child process and a real database."""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from aidns.resolver.config import QueryLogConfig
from aidns.resolver.keeper.logkeeper import LogKeeper
from aidns.resolver.query import Action, Decision, ProcessInfo, Query, Transport
from aidns.resolver.querylog.recorder import QueryRecorder
from tests.unit.helpers import make_wire

FAST = QueryLogConfig(batch_interval_s=0.05)
OLLAMA = ProcessInfo(41, "ollama", "/usr/bin/ollama", "ollama serve", 1000, "ollama", "ann")


def blocked(name: str) -> Query:
    query = Query(make_wire(name), ("127.0.0.1", 40000), Transport.UDP, time.monotonic())
    query.process = OLLAMA
    query.decision = Decision(Action.BLOCKED, name, "telemetry")
    query.response = query.raw
    query.answered_at = time.monotonic()
    return query


def rows(path: Path) -> list[tuple[str, int, str | None, str]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(
            "SELECT name, count, process, verdict FROM queries ORDER BY id"
        ).fetchall()


def test_queries_handed_over_are_written_by_the_child_and_counted(tmp_path: Path) -> None:
    recorder = QueryRecorder()
    keeper = LogKeeper(recorder, tmp_path / "queries.db", FAST)
    keeper.start()
    for index in range(50):
        recorder(blocked(f"n{index}.example"), 2)
    deadline = time.monotonic() + 20
    while keeper.counts()["written"] < 100:  # the child writes while the server runs
        assert time.monotonic() < deadline, keeper.counts()
        time.sleep(0.05)
    recorder(blocked("last.example"))
    keeper.stop()
    assert keeper.counts() == {"written": 101, "dropped": 0, "mirror_dropped": 0}
    written = rows(tmp_path / "queries.db")
    assert len(written) == 51
    assert written[0] == ("n0.example", 2, "ollama", "blocked")
    assert written[-1] == ("last.example", 1, "ollama", "blocked")
    assert keeper.starts == 1


def test_a_writer_that_cannot_start_loses_queries_counted_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = QueryRecorder()
    keeper = LogKeeper(recorder, tmp_path / "queries.db", FAST, restart_after_s=(0.1, 0.2))
    keeper.command = [sys.executable, "-c", "import sys; sys.exit(3)"]
    with caplog.at_level(logging.WARNING):
        keeper.start()
        for index in range(5):
            recorder(blocked(f"n{index}.example"))
            time.sleep(0.2)
        started = time.monotonic()
        keeper.stop()
    assert time.monotonic() - started < 5
    assert keeper.counts()["written"] == 0
    assert keeper.counts()["dropped"] == 5
    messages = [record.getMessage() for record in caplog.records]
    assert any("exited with status 3; starting another" in m for m in messages), messages
    assert any("5 in all" in m and "not logged" in m for m in messages), messages
    assert not (tmp_path / "queries.db").exists()
