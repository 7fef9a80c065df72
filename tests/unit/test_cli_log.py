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
    assert table.splitlines()[0].split()[:3] == ["time", "n", "process"]
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
