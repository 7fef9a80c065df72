"""The query log under faults: its file deleted, replaced or damaged while aidns runs, a
database that fails, a flood that overflows its window. Whatever happens, every answered
query is either a logged row (with its count) or counted as dropped, and aidns says so.

The first tests drive the writer itself on real files with real SQLite; the last ones run the
real `aidns serve` with a dnsmasq upstream on loopback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from aidns.resolver.config import QueryLogConfig
from aidns.resolver.query import Action, Decision, Query
from aidns.resolver.querylog.writer import QueryLog
from aidns.resolver.replies import BlockResponse
from tests.e2e.conftest import Aidns, Dnsmasq, aidns_command, start_aidns
from tests.faults.helpers import log_writer_pid
from tests.unit.helpers import make_query

FAST = QueryLogConfig(batch_interval_s=0.05, busy_timeout_s=0.2)
GARBAGE = os.urandom(64 << 10)


def blocked(name: str) -> Query:
    query = make_query(name)
    query.decision = Decision(Action.BLOCKED, name, "test")
    query.response = BlockResponse().reply_to(query)
    return query


def logged(path: Path) -> dict[str, int]:
    """Name -> count of every row in the database at `path`; empty when there is none."""
    if not path.exists():
        return {}
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found: dict[str, int] = {}
        for name, count in connection.execute("SELECT name, count FROM queries"):
            found[name] = found.get(name, 0) + count
        return found
    except sqlite3.Error:
        return {}
    finally:
        connection.close()


def wait_for(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def wait_until_counted(querylog: QueryLog, queries: int) -> None:
    """Until every one of `queries` handed over is counted as written or dropped."""
    wait_for(lambda: querylog.written + querylog.dropped == queries)


def warnings_about(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# Each fault damages the log at `path` while the writer runs; it returns what undoes it, if
# anything has to be undone before the writer can recover.
def delete(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def delete_only_the_database(path: Path) -> None:
    path.unlink()


def replace_with_garbage(path: Path) -> None:
    staged = path.with_name("staged")
    staged.write_bytes(GARBAGE)
    os.replace(staged, path)


def overwrite_in_place(path: Path) -> None:
    with path.open("r+b") as file:
        file.write(GARBAGE)


def truncate_in_place(path: Path) -> None:
    with path.open("r+b") as file:
        file.truncate(0)


def delete_the_wal(path: Path) -> None:
    path.with_name(path.name + "-wal").unlink()


FAULTS: dict[str, Callable[[Path], None]] = {
    "deleted with -wal and -shm": delete,
    "only queries.db deleted": delete_only_the_database,
    "replaced with garbage": replace_with_garbage,
    "overwritten with garbage in place": overwrite_in_place,
    "truncated in place": truncate_in_place,
    "-wal deleted": delete_the_wal,
}
SAID = {
    "deleted with -wal and -shm": "was deleted while aidns ran; started a new one",
    "only queries.db deleted": "was deleted while aidns ran; started a new one",
    "replaced with garbage": "was replaced while aidns ran: file is not a database; moved it to",
    "overwritten with garbage in place": "was overwritten while aidns ran",
    "truncated in place": "was overwritten while aidns ran",
    "-wal deleted": "lost its -wal or -shm file while aidns ran; reopened it",
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_the_writer_notices_a_damaged_file_says_so_once_and_keeps_every_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    path = tmp_path / "queries.db"
    querylog = QueryLog(path, FAST)
    querylog.start()
    with caplog.at_level(logging.WARNING):
        for index in range(5):
            querylog(blocked(f"before{index}.example"), count=index + 1)
        wait_for(lambda: querylog.written == 15)
        assert sum(logged(path).values()) == 15
        FAULTS[fault](path)
        for batch in range(4):  # several batches: the change is said once, not once a batch
            for index in range(5):
                querylog(blocked(f"after{batch}-{index}.example"), count=2)
            wait_until_counted(querylog, 15 + 10 * (batch + 1))
        querylog.stop()
    now_logged = logged(path)
    assert {name for name in now_logged if name.startswith("after")} == {
        f"after{batch}-{index}.example" for batch in range(4) for index in range(5)
    }
    assert querylog.dropped == 0 and querylog.written == 55
    if fault == "-wal deleted":  # the rows in the lost -wal were checkpointed first
        assert sum(now_logged.values()) == 55
    else:
        assert sum(now_logged.values()) == 40  # a new file, with every row since
    (said,) = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "aidns ran" in r.getMessage()
    ]
    assert SAID[fault] in said
    asides = sorted(tmp_path.glob("queries.db.corrupt-*"))
    if "moved it to" in said:
        (aside,) = asides
        assert str(aside) in said
        if fault == "replaced with garbage":
            assert aside.read_bytes() == GARBAGE
    else:
        assert asides == []


def test_a_file_that_is_not_a_database_at_start_is_moved_aside_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "queries.db"
    path.write_bytes(GARBAGE)
    querylog = QueryLog(path, FAST)
    with caplog.at_level(logging.WARNING):
        querylog.start()
        querylog(blocked("a.example"))
        wait_for(lambda: querylog.written == 1)
        querylog.stop()
    (aside,) = tmp_path.glob("queries.db.corrupt-*")
    assert aside.read_bytes() == GARBAGE
    (said,) = warnings_about(caplog, "moved it to")
    assert str(aside) in said and "started a new one" in said
    assert logged(path) == {"a.example": 1}


def test_a_directory_in_place_of_the_file_drops_counts_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "queries.db"
    querylog = QueryLog(path, FAST, retry_after_s=0.0)
    querylog.start()
    with caplog.at_level(logging.WARNING):
        querylog(blocked("first.example"))
        wait_for(lambda: querylog.written == 1)
        delete(path)
        path.mkdir()
        for index in range(3):
            querylog(blocked(f"lost{index}.example"), count=2)
            wait_until_counted(querylog, 1 + 2 * (index + 1))
        path.rmdir()
        querylog(blocked("after.example"))
        wait_for(lambda: querylog.written == 2)
        querylog.stop()
    assert logged(path) == {"after.example": 1}
    assert (querylog.written, querylog.dropped) == (2, 6)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "dropping records until it recovers" in errors[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_a_locked_database_counts_drops_in_queries_and_says_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "queries.db"
    querylog = QueryLog(path, FAST, retry_after_s=0.0)
    querylog.start()
    assert querylog.ready.wait(5)
    holder = sqlite3.connect(path, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    with caplog.at_level(logging.WARNING):
        for _ in range(7):
            querylog(blocked("locked.example"))  # one row with count 7
        querylog(blocked("locked.example"), count=5)
        wait_for(lambda: querylog.dropped == 12)
        holder.rollback()
        holder.close()
        querylog(blocked("after.example"), count=3)
        wait_for(lambda: querylog.written == 3)
        querylog.stop()
    assert logged(path) == {"after.example": 3}
    (said,) = warnings_about(caplog, "not logged")
    assert "12 answered queries were not logged" in said
    assert "12 because the database did not take them" in said


def test_drops_are_said_at_most_once_an_interval_with_the_number_since_the_last_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    config = QueryLogConfig(batch_interval_s=0.02, window_entries=3)
    querylog = QueryLog(tmp_path / "queries.db", config, clock=clock, drops_said_every_s=10)
    querylog.start()
    with caplog.at_level(logging.WARNING):
        for index in range(5):  # the window takes 3 names; 2 are dropped
            querylog(blocked(f"first{index}.example"))
        wait_for(lambda: warnings_about(caplog, "not logged"))
        for round_ in range(3):  # 6 more drops within the interval: nothing said yet
            for index in range(5):
                querylog(blocked(f"more{round_}-{index}.example"))
            wait_until_counted(querylog, 5 * (round_ + 2))
        time.sleep(0.2)
        assert len(warnings_about(caplog, "not logged")) == 1
        clock.now += 11
        wait_for(lambda: len(warnings_about(caplog, "not logged")) == 2)
        querylog.stop()
    first, second = warnings_about(caplog, "not logged")
    # How many of each round of 5 fit depends on when the writer empties the window, so
    # the numbers are checked against each other, not against a schedule.
    said_first = int(re.search(r"(\d+) answered queries were not logged so far", first)[1])
    said_second = int(
        re.search(r"(\d+) answered queries were not logged in the last 11 s", second)[1]
    )
    assert "more than 3 different queries came within one write" in first
    assert said_first >= 1 and said_second >= 1
    assert said_first + said_second == querylog.dropped
    assert second.endswith(f"; {querylog.dropped} in all")
    assert querylog.written + querylog.dropped == 20


def test_queries_after_stop_are_counted_as_dropped(tmp_path: Path) -> None:
    querylog = QueryLog(tmp_path / "queries.db", FAST)
    querylog.start()
    querylog(blocked("a.example"))
    querylog.stop()
    querylog(blocked("late.example"), count=4)
    assert (querylog.written, querylog.dropped) == (1, 4)


def test_an_unexpected_error_in_the_writer_is_said_once_counted_and_survived(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    querylog = QueryLog(tmp_path / "queries.db", FAST)
    real_write = querylog.database.write
    failures = [2]

    def write_that_fails_twice(work: Callable[[sqlite3.Connection], object]) -> bool:
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("a bug")
        return real_write(work)

    querylog.database.write = write_that_fails_twice  # type: ignore[method-assign]
    hooked: list[object] = []
    threading.excepthook, old_hook = hooked.append, threading.excepthook
    try:
        with caplog.at_level(logging.WARNING):
            querylog.start()
            for index in range(3):
                querylog(blocked(f"n{index}.example"))
                wait_until_counted(querylog, index + 1)
            querylog.stop()
    finally:
        threading.excepthook = old_hook
    assert hooked == []
    assert (querylog.written, querylog.dropped) == (1, 2)
    (said,) = [r for r in caplog.records if "a bug" in r.getMessage()]
    assert "RuntimeError" in said.getMessage() and said.exc_info is None


def test_the_json_lines_file_alone_counts_what_it_took(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror" / "q.jsonl"
    mirror.parent.mkdir()
    config = QueryLogConfig(enabled=False, batch_interval_s=0.05, jsonl=str(mirror))
    querylog = QueryLog(tmp_path / "queries.db", config)
    querylog.start()
    querylog(blocked("a.example"), count=3)
    wait_for(lambda: querylog.written == 3)
    mirror.unlink()
    mirror.parent.rmdir()
    mirror.parent.with_name("mirror").write_text("")  # the directory is a file now
    querylog._jsonl = None  # as after the file was closed: the next batch opens it again
    querylog(blocked("b.example"), count=2)
    wait_for(lambda: querylog.dropped == 2)
    querylog.stop()
    assert (querylog.written, querylog.dropped) == (3, 2)
    assert querylog.counts() == {"written": 3, "dropped": 2}
    assert not (tmp_path / "queries.db").exists()


# The real server.


def status_of(server: Aidns) -> dict[str, object]:
    try:
        return dict(json.loads((server.data_dir / "status.json").read_text()))
    except (OSError, ValueError):
        return {}


def ask(server: Aidns, name: str) -> None:
    dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=server.port(), timeout=3)


def shown_by_aidns_log(server: Aidns, tmp_path: Path) -> set[str]:
    done = subprocess.run(
        aidns_command(
            "log",
            f"--data-dir={server.data_dir}",
            f"--config={tmp_path / 'config.yaml'}",
            "--json",
            "--limit=1000",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return {json.loads(line)["name"] for line in done.stdout.splitlines()}


def stopped_log(server: Aidns) -> list[str]:
    server.stop()
    assert not [line for line in server.log if "Traceback" in line]
    return server.log


def assert_every_answer_is_logged_or_dropped(server: Aidns, lost_with_the_file: int) -> None:
    """After `stop`: status.json's final counts and the rows in queries.db add up."""
    final = status_of(server)
    counts = final["query_log"]
    assert isinstance(counts, dict)
    assert counts["written"] + counts["dropped"] == final["queries"]
    rows = sum(logged(server.data_dir / "queries.db").values())
    assert rows + lost_with_the_file + counts["dropped"] == final["queries"]


@pytest.fixture
def server(tmp_path: Path, dnsmasq: Dnsmasq) -> Iterator[Aidns]:
    lists = tmp_path / "data" / "lists"
    lists.mkdir(parents=True)
    (lists / "mine.txt").write_text("blocked.test\nflood.test\n")
    aidns = start_aidns(tmp_path, f"--upstream=127.0.0.1:{dnsmasq.port}")
    yield aidns
    aidns.stop()


def test_aidns_starts_a_new_log_when_queries_db_is_deleted(server: Aidns, tmp_path: Path) -> None:
    database = server.data_dir / "queries.db"
    before = wait_until_shown(server, tmp_path, "before")
    delete(database)
    after = wait_until_shown(server, tmp_path, "after")
    shown = shown_by_aidns_log(server, tmp_path)
    assert after <= shown and not before & shown
    log = stopped_log(server)
    said = [line for line in log if "queries.db was deleted while aidns ran" in line]
    assert len(said) == 1 and "WARNING" in said[0] and "started a new one" in said[0]
    assert_every_answer_is_logged_or_dropped(server, lost_with_the_file=len(before))


@pytest.mark.parametrize("fault", ["replaced with garbage", "overwritten with garbage in place"])
def test_aidns_moves_a_garbage_queries_db_aside_and_starts_a_new_one(
    server: Aidns, tmp_path: Path, fault: str
) -> None:
    database = server.data_dir / "queries.db"
    before = wait_until_shown(server, tmp_path, "before")
    FAULTS[fault](database)
    after = wait_until_shown(server, tmp_path, "after")
    assert not before & shown_by_aidns_log(server, tmp_path)
    (aside,) = server.data_dir.glob("queries.db.corrupt-*")
    if fault == "replaced with garbage":
        assert aside.read_bytes() == GARBAGE
    log = stopped_log(server)
    said = [line for line in log if "moved it to" in line]
    assert len(said) == 1 and str(aside) in said[0] and "started a new one" in said[0]
    assert_every_answer_is_logged_or_dropped(server, lost_with_the_file=len(before))
    assert set(logged(database)) == after


def wait_until_shown(server: Aidns, tmp_path: Path, prefix: str) -> set[str]:
    """Ask five blocked names and a forwarded one; wait until `aidns log` shows them all."""
    names = {f"{prefix}{n}.blocked.test" for n in range(5)} | {f"{prefix}.up.test"}
    for name in sorted(names):
        ask(server, name)
    deadline = time.monotonic() + 5
    while not (server.data_dir / "queries.db").exists() or not names <= shown_by_aidns_log(
        server, tmp_path
    ):
        assert time.monotonic() < deadline, f"the {prefix} names were not logged within 5 s"
        time.sleep(0.2)
    return names


def flood_packet(index: int) -> bytes:
    labels = (f"n{index}".encode(), b"flood", b"test")
    name = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    return struct.pack(">HHHHHH", index & 0xFFFF, 0x0100, 1, 0, 0, 0) + name + b"\0\1\0\1"


DROPS_SAID = re.compile(
    r"query log: (\d+) answered quer(?:y was|ies were) not logged .*; (\d+) in all"
)


def test_a_flood_while_the_log_writer_stalls_is_dropped_said_and_every_answer_adds_up(
    tmp_path: Path, dnsmasq: Dnsmasq
) -> None:
    """The log writer child is stopped (SIGSTOP) while distinct names flood in: the server's
    buffer fills, the server keeps answering and counts what it cannot keep."""
    lists = tmp_path / "data" / "lists"
    lists.mkdir(parents=True)
    (lists / "mine.txt").write_text("flood.test\n")
    (tmp_path / "config.yaml").write_text("query_log_buffer: 65536\n")
    server = start_aidns(tmp_path, f"--upstream=127.0.0.1:{dnsmasq.port}")
    try:
        writer = log_writer_pid(server)
        address = ("127.0.0.1", server.port())
        os.kill(writer, signal.SIGSTOP)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.settimeout(3)
                for index in range(5000):  # far more than 64 KiB of records
                    udp.sendto(flood_packet(index), address)
                    assert udp.recv(512)[:2] == struct.pack(">H", index & 0xFFFF)
        finally:
            os.kill(writer, signal.SIGCONT)
        ask(server, "after.flood.test")
        time.sleep(0.5)
    finally:
        log = stopped_log(server)
    final = status_of(server)
    counts = final["query_log"]
    assert isinstance(counts, dict) and final["queries"] == 5001
    assert 0 < counts["dropped"] < 5000
    said = [found for line in log if (found := DROPS_SAID.search(line))]
    assert said, "drops are not said in aidns's log"
    assert "because the server's buffer for the log writer was full" in said[0].group(0)
    assert sum(int(found.group(1)) for found in said) == counts["dropped"]
    assert int(said[-1].group(2)) == counts["dropped"]
    assert_every_answer_is_logged_or_dropped(server, lost_with_the_file=0)


def test_a_log_writer_that_dies_is_said_and_replaced_and_dns_goes_on(
    tmp_path: Path, dnsmasq: Dnsmasq
) -> None:
    lists = tmp_path / "data" / "lists"
    lists.mkdir(parents=True)
    (lists / "mine.txt").write_text("blocked.test\n")
    server = start_aidns(tmp_path, f"--upstream=127.0.0.1:{dnsmasq.port}")
    try:
        first = log_writer_pid(server)
        ask(server, "before.blocked.test")
        os.kill(first, signal.SIGKILL)
        ask(server, "during.blocked.test")  # answered while no writer runs
        deadline = time.monotonic() + 10
        while (second := log_writer_pid(server)) == first:
            assert time.monotonic() < deadline, "no new writer"
            time.sleep(0.1)
        names = wait_until_shown(server, tmp_path, "after")
    finally:
        log = stopped_log(server)
    exited = [line for line in log if f"query log writer (pid {first}) exited" in line]
    assert len(exited) == 1 and "starting another" in exited[0], log
    assert second != first
    assert names <= set(logged(server.data_dir / "queries.db"))
    assert_every_answer_is_logged_or_dropped(server, lost_with_the_file=0)
