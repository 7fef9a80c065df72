from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import subprocess
import time
from pathlib import Path

import dns.message
import dns.rrset
import pytest

from aidns.resolver.config import QueryLogConfig
from aidns.resolver.query import Action, Decision, ProcessInfo, Query
from aidns.resolver.querylog.writer import ROWS_AT_ONCE, QueryLog, summarize
from aidns.resolver.replies import BlockResponse

from .helpers import make_query

FAST = QueryLogConfig(batch_interval_s=0.05, busy_timeout_s=0.2)


def answered(name: str, action: Action = Action.BLOCKED, pid: int | None = 4242) -> Query:
    query = make_query(name)
    query.decision = Decision(action, name, "test")
    query.response = BlockResponse().reply_to(query)
    if pid is not None:
        query.process = ProcessInfo(
            pid=pid, name="ollama", exe="/usr/bin/ollama", uid=1000, tool="ollama"
        )
    return query


def rows(path: Path) -> list[sqlite3.Row]:
    connection = sqlite3.connect(path)
    connection.row_factory = sqlite3.Row
    try:
        return connection.execute("SELECT * FROM queries ORDER BY id").fetchall()
    finally:
        connection.close()


def wait_for(condition, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_rows_carry_the_query_process_and_decision(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    querylog = QueryLog(path, FAST)
    querylog.start()
    querylog(answered("telemetry.example"))
    querylog.stop()
    (row,) = rows(path)
    assert (row["name"], row["qtype"], row["verdict"], row["rule"], row["list"]) == (
        "telemetry.example",
        "A",
        "blocked",
        "telemetry.example",
        "test",
    )
    assert (row["pid"], row["process"], row["exe"], row["tool"], row["uid"]) == (
        4242,
        "ollama",
        "/usr/bin/ollama",
        "ollama",
        1000,
    )
    assert (row["client"], row["protocol"], row["rcode"], row["answer"]) == (
        "127.0.0.1",
        "udp",
        "NOERROR",
        "0.0.0.0",
    )
    assert row["rname"] == "example.telemetry" and row["count"] == 1
    assert abs(row["ts"] - time.time()) < 5


def test_identical_queries_in_one_window_fold_into_a_count(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    querylog = QueryLog(path, QueryLogConfig(batch_interval_s=60))
    querylog.start()
    for _ in range(5):
        querylog(answered("a.example"))
    querylog(answered("a.example", pid=7))
    querylog(answered("b.example"))
    querylog.stop()
    assert [(r["name"], r["pid"], r["count"]) for r in rows(path)] == [
        ("a.example", 4242, 5),
        ("a.example", 7, 1),
        ("b.example", 4242, 1),
    ]


def test_a_full_window_drops_and_counts(tmp_path: Path) -> None:
    querylog = QueryLog(tmp_path / "q.db", QueryLogConfig(window_entries=3, batch_interval_s=60))
    for i in range(5):
        querylog(answered(f"n{i}.example"))
    assert querylog.dropped == 2


def test_retention_by_rows_and_age(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    querylog = QueryLog(path, QueryLogConfig(batch_interval_s=0.05, max_rows=3))
    querylog.start()
    for i in range(6):
        querylog(answered(f"n{i}.example"))
    querylog.stop()
    assert [r["name"] for r in rows(path)] == ["n3.example", "n4.example", "n5.example"]
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE queries SET ts = ts - 86400 * 3 WHERE name = 'n3.example'")
    connection.close()
    querylog = QueryLog(path, QueryLogConfig(batch_interval_s=0.05, days=2))
    querylog.start()
    querylog.stop()
    assert [r["name"] for r in rows(path)] == ["n4.example", "n5.example"]


def test_json_lines_mirror(tmp_path: Path) -> None:
    mirror = tmp_path / "q.jsonl"
    querylog = QueryLog(tmp_path / "q.db", QueryLogConfig(batch_interval_s=0.05, jsonl=str(mirror)))
    querylog.start()
    querylog(answered("a.example", Action.WATCHED))
    querylog.stop()
    (line,) = mirror.read_text().splitlines()
    record = json.loads(line)
    assert (
        record["name"] == "a.example"
        and record["verdict"] == "watched"
        and record["process"] == "ollama"
    )


def test_a_big_window_is_written_whole_in_chunks_and_mirrored_even_when_the_db_fails(
    tmp_path: Path,
) -> None:
    count = 2 * ROWS_AT_ONCE + 500
    for enabled, expected_rows in ((True, count), (False, 0)):
        mirror = tmp_path / f"{enabled}.jsonl"
        path = tmp_path / f"{enabled}.db"
        config = QueryLogConfig(enabled=enabled, batch_interval_s=60, jsonl=str(mirror))
        querylog = QueryLog(path, config)
        querylog.start()
        for index in range(count):
            querylog(answered(f"n{index}.example"))
        querylog.stop()
        assert len(mirror.read_text().splitlines()) == count
        assert (len(rows(path)) if path.exists() else 0) == expected_rows
    directory = tmp_path / "locked"
    directory.mkdir()
    querylog = QueryLog(
        directory / "q.db", QueryLogConfig(batch_interval_s=60, jsonl=str(directory / "m.jsonl"))
    )
    querylog.start()
    assert querylog.ready.wait(5)  # the schema is in place and the writer is idle
    assert (directory / "q.db").exists()
    holder = sqlite3.connect(directory / "q.db", timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # the writer cannot get in
    try:
        for index in range(count):
            querylog(answered(f"m{index}.example"))
        querylog.stop()
    finally:
        holder.rollback()
        holder.close()
    assert len((directory / "m.jsonl").read_text().splitlines()) == count
    assert querylog.dropped == count and querylog.written == 0


def test_locked_database_drops_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "q.db"
    QueryLog(path, FAST).stop()  # create the schema
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN EXCLUSIVE")
    querylog = QueryLog(path, FAST, retry_after_s=0.0)  # no back-off in the test
    with caplog.at_level(logging.ERROR):
        querylog.start()
        querylog(answered("during.example"))
        wait_for(lambda: querylog.dropped == 1)
    assert any("locked" in r.getMessage() for r in caplog.records)
    holder.execute("COMMIT")
    holder.close()
    querylog(answered("after.example"))
    wait_for(lambda: querylog.written == 1)
    querylog.stop()
    assert [r["name"] for r in rows(path)] == ["after.example"]


def test_corrupt_database_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    querylog = QueryLog(path, FAST)
    querylog.start()
    querylog(answered("a.example"))
    wait_for(lambda: querylog.written == 1)
    querylog.stop()
    assert [r["name"] for r in rows(path)] == ["a.example"]
    (aside,) = tmp_path.glob("q.db.corrupt-*")
    assert aside.read_bytes().startswith(b"this is not sqlite")


def test_unwritable_directory_is_not_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    querylog = QueryLog(blocker / "q.db", FAST)
    querylog.start()
    querylog(answered("a.example"))
    wait_for(lambda: querylog.dropped == 1)
    querylog.stop()


def test_summaries() -> None:
    query = make_query("x.example", "AAAA")
    assert summarize(BlockResponse().reply_to(query), query.question_end) == ("NOERROR", "::")
    nx = BlockResponse(mode="nxdomain").reply_to(query)
    assert summarize(nx, query.question_end) == ("NXDOMAIN", "")
    request = dns.message.from_wire(query.raw)
    response = dns.message.make_response(request)
    for name, rdtype, rdata in (
        ("x.example.", "CNAME", "edge.example.net."),
        ("edge.example.net.", "AAAA", "2001:db8::7"),
    ):
        response.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, rdata))
    assert summarize(response.to_wire(), query.question_end) == (
        "NOERROR",
        "CNAME edge.example.net. 2001:db8::7",
    )
    claims_two = bytearray(BlockResponse().reply_to(query))
    claims_two[7] = 2  # ANCOUNT says two records, one follows
    assert summarize(bytes(claims_two), query.question_end) == ("NOERROR", "(malformed)")


def test_full_disk_drops_then_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        querylog = QueryLog(disk / "q.db", FAST, retry_after_s=0.0)  # no back-off in the test
        querylog.start()
        querylog(answered("first.example"))
        wait_for(lambda: querylog.written == 1)
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as out:
            while True:
                out.write(b"\0" * 4096)
                out.flush()
        with caplog.at_level(logging.ERROR):
            for i in range(300):
                querylog(answered(f"n{i}.while-full.example"))
            wait_for(lambda: querylog.dropped > 0)
        assert any("full" in r.getMessage() for r in caplog.records)
        filler.unlink()
        querylog(answered("after.example"))
        wait_for(lambda: "after.example" in [r["name"] for r in rows(disk / "q.db")])
        querylog.stop()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
