from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aidns.cli.main import app
from aidns.resolver.config import QueryLogConfig
from aidns.resolver.query import Action, Decision, ProcessInfo
from aidns.resolver.querylog.schema import DB_NAME
from aidns.resolver.querylog.writer import QueryLog
from aidns.resolver.replies import BlockResponse

from .helpers import make_query

runner = CliRunner()
OLLAMA = ProcessInfo(pid=100, name="ollama", exe="/usr/local/bin/ollama", uid=1000, tool="ollama")
CURL = ProcessInfo(pid=200, name="curl", exe="/usr/bin/curl", uid=1000)


def record(querylog: QueryLog, name: str, process: ProcessInfo | None, action: Action) -> None:
    query = make_query(name)
    query.process = process
    query.decision = Decision(action, name if action is Action.BLOCKED else "", "lists")
    query.response = BlockResponse().reply_to(query)
    querylog(query)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    querylog = QueryLog(tmp_path / DB_NAME, QueryLogConfig(batch_interval_s=60))
    querylog.start()
    for _ in range(3):
        record(querylog, "api.openai.com", OLLAMA, Action.WATCHED)
    record(querylog, "api.openai.com", CURL, Action.WATCHED)
    record(querylog, "o1.ingest.sentry.io", OLLAMA, Action.BLOCKED)
    record(querylog, "example.com", CURL, Action.FORWARDED)
    record(querylog, "openai.com.evil.example", None, Action.FORWARDED)
    querylog.stop()
    connection = sqlite3.connect(tmp_path / DB_NAME)
    with connection:
        connection.execute("UPDATE queries SET ts = ts - 7200 WHERE name = 'example.com'")
    connection.close()
    return tmp_path


def run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_who_names_every_process_that_asked(data_dir: Path) -> None:
    rows = json.loads(run("who", "openai.com", "--json", f"--data-dir={data_dir}"))
    assert [(r["process"], r["tool"], r["count"]) for r in rows] == [
        ("ollama", "ollama", 3),
        ("curl", None, 1),
    ]
    table = run("who", "api.openai.com", f"--data-dir={data_dir}")
    assert "ollama" in table and "/usr/local/bin/ollama" in table and "curl" in table
    assert "nobody looked up" in run("who", "anthropic.com", f"--data-dir={data_dir}")


def test_log_filters(data_dir: Path) -> None:
    def names(*args: str) -> list[str]:
        out = run("log", "--json", f"--data-dir={data_dir}", *args)
        return [json.loads(line)["name"] for line in out.splitlines()]

    assert names("--domain", "sentry.io") == ["o1.ingest.sentry.io"]
    assert names("--domain", "openai.com") == ["api.openai.com", "api.openai.com"]
    assert names("--process", "curl") == ["example.com", "api.openai.com"]
    assert names("--process", "/usr/local/bin/ollama", "--verdict", "blocked") == [
        "o1.ingest.sentry.io"
    ]
    assert names("--tool", "ollama", "--limit", "1") == ["o1.ingest.sentry.io"]
    assert "example.com" not in names("--since", "1h")
    assert names("--until", "1h") == ["example.com"]
    newest_first = names()
    assert newest_first[0] == "openai.com.evil.example" and newest_first[-1] == "api.openai.com"


def test_log_table_and_csv(data_dir: Path) -> None:
    table = run("log", f"--data-dir={data_dir}")
    assert table.splitlines()[0].split()[:3] == ["time", "n", "client"]
    assert "WATCHED" in table
    rows = list(csv.DictReader(io.StringIO(run("log", "--csv", f"--data-dir={data_dir}"))))
    assert {r["verdict"] for r in rows} == {"watched", "blocked", "forwarded"}
    assert rows[-1]["count"] == "3"


def test_top(data_dir: Path) -> None:
    by_domain = json.loads(run("top", "--json", f"--data-dir={data_dir}"))
    assert (by_domain[0]["key"], by_domain[0]["count"], by_domain[0]["processes"]) == (
        "api.openai.com",
        4,
        2,
    )
    by_process = json.loads(run("top", "--by", "process", "--json", f"--data-dir={data_dir}"))
    assert [(r["key"], r["count"]) for r in by_process][:2] == [("ollama", 4), ("curl", 2)]
    blocked = json.loads(run("top", "--by", "blocked", "--json", f"--data-dir={data_dir}"))
    assert [r["key"] for r in blocked] == ["o1.ingest.sentry.io"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["log", "--since", "yesterday-ish"], "--since: 'yesterday-ish' is not a time"),
        (["log", "--verdict", "nuked"], "--verdict: 'nuked' is not one of"),
        (["top", "--by", "colour"], "--by: 'colour' is not one of"),
    ],
)
def test_bad_arguments_are_one_clear_line(data_dir: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, f"--data-dir={data_dir}"])
    assert result.exit_code == 2 and message in result.output


def test_no_log_yet(tmp_path: Path) -> None:
    result = runner.invoke(app, ["who", "x.example", f"--data-dir={tmp_path}"])
    assert result.exit_code == 2 and "no query log at" in result.output


def test_time_parsing() -> None:
    from aidns.resolver.querylog.reader import parse_time

    now = 1_800_000_000.0
    assert parse_time("90s", option="--since", now=now) == now - 90
    assert parse_time("2h", option="--since", now=now) == now - 7200
    assert parse_time("1.5d", option="--since", now=now) == now - 129600
    assert parse_time("1700000000", option="--since", now=now) == 1_700_000_000
    assert parse_time("2026-11-29T08:00", option="--since") == time.mktime(
        (2026, 11, 29, 8, 0, 0, 0, 0, -1)
    )


def test_log_times_carry_the_date_once_rows_span_days_and_always_in_json_and_csv(
    data_dir: Path,
) -> None:
    table = run("log", f"--data-dir={data_dir}").splitlines()
    yesterday = time.strftime("%Y-%m-%d", time.localtime(time.time() - 86400 * 2))
    connection = sqlite3.connect(data_dir / DB_NAME)
    with connection:
        connection.execute("UPDATE queries SET ts = ts - 2 * 86400 WHERE name = 'example.com'")
    connection.close()
    dated = run("log", f"--data-dir={data_dir}").splitlines()
    today = time.strftime("%Y-%m-%d")
    if not any(today in line for line in table):  # all of today's rows: no date at all
        assert not any(yesterday in line for line in table)
    assert all(line.split()[0] in (today, yesterday) for line in dated[1:])
    row = json.loads(run("log", "--json", "--limit=1", f"--data-dir={data_dir}"))
    assert row["time"].startswith(today) and row["time"][-6] in "+-"
    header, first = run("log", "--csv", "--limit=1", f"--data-dir={data_dir}").splitlines()[:2]
    assert header.split(",")[-1] == "time" and today in first


def test_log_has_a_client_column_and_filter_and_refuses_two_formats(data_dir: Path) -> None:
    assert run("log", f"--data-dir={data_dir}").splitlines()[0].split()[:3] == [
        "time",
        "n",
        "client",
    ]
    assert run("log", "--client=127.0.0.1", "--json", f"--data-dir={data_dir}").count("\n") == 5
    assert run("log", "--client=192.0.2.7", "--json", f"--data-dir={data_dir}") == ""
    result = runner.invoke(app, ["log", "--json", "--csv", f"--data-dir={data_dir}"])
    assert result.exit_code == 2 and "--json and --csv: choose one" in result.output


def test_follow_rows_line_up_with_the_header() -> None:
    from aidns.cli.log import FOLLOW_WIDTHS, LOG_COLUMNS
    from aidns.cli.table import render

    rows = [
        {"ts": "2026-11-29 10:00:00", "count": 1, "name": "a.example", "verdict": "blocked"},
        {"ts": "2026-11-29 10:00:01", "count": 12345, "name": "x" * 80, "process": "p" * 30},
    ]
    header = render([], LOG_COLUMNS, widths=FOLLOW_WIDTHS).splitlines()[0]
    lines = [render([row], LOG_COLUMNS, widths=FOLLOW_WIDTHS).splitlines()[1] for row in rows]
    starts = [header.index(heading) for _, heading in LOG_COLUMNS[:6]]
    for line in lines:
        assert [line[start - 2 : start] for start in starts[1:]] == ["  "] * 5
