"""`aidns optout` and the opt-outs `aidns check` shows, through the CLI, with a real query log."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aidns.cli.main import app
from aidns.resolver.config import QueryLogConfig
from aidns.resolver.procinfo.optout import conflicts, shell_script
from aidns.resolver.procinfo.tools import OptOut, default_tools
from aidns.resolver.query import Action, ProcessInfo
from aidns.resolver.querylog.schema import DB_NAME
from aidns.resolver.querylog.writer import QueryLog

from .test_cli_log import record

runner = CliRunner()
CLAUDE = ProcessInfo(
    pid=300, name="claude", exe="/home/u/.local/bin/claude", uid=1000, tool="claude-code"
)
CURL = ProcessInfo(pid=200, name="curl", exe="/usr/bin/curl", uid=1000)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    querylog = QueryLog(tmp_path / DB_NAME, QueryLogConfig(batch_interval_s=60))
    querylog.start()
    for _ in range(4):
        record(querylog, "statsig.anthropic.com", CLAUDE, Action.BLOCKED)
    record(querylog, "example.com", CURL, Action.FORWARDED)
    querylog.stop()
    return tmp_path


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_optout_for_one_tool_is_ready_to_paste(data_dir: Path) -> None:
    out = run("optout", "claude-code", f"--data-dir={data_dir}")
    lines = out.splitlines()
    assert "export DISABLE_TELEMETRY=1" in lines
    assert "export DISABLE_ERROR_REPORTING=1" in lines
    assert "# or: export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1" in lines
    assert lines[0] == "# the query log shows these tools on this machine: claude-code (4 queries)"
    assert all(not line or line.startswith(("#", "export ")) for line in lines)
    # A real shell takes it: the variables are set, the comments are ignored.
    script = out + 'printf "%s %s" "$DISABLE_TELEMETRY" "$DISABLE_ERROR_REPORTING"\n'
    shell = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert shell.stdout == "1 1"


def test_settings_that_are_not_variables_are_comments(data_dir: Path) -> None:
    out = run("optout", "gemini-cli", f"--data-dir={data_dir}")
    assert '# Gemini CLI: in settings.json set "privacy": {"usageStatisticsEnabled": false}' in out
    assert "export" not in out


def test_every_tool_with_the_seen_ones_first(data_dir: Path) -> None:
    out = run("optout", f"--data-dir={data_dir}")
    headers = [line for line in out.splitlines() if line.startswith("# ") and ": " in line]
    assert headers[1].startswith("# claude-code: ") and "saw it 4 times" in headers[1]
    for wanted in (
        "export HF_HUB_DISABLE_TELEMETRY=1",
        "export VLLM_NO_USAGE_STATS=1",
        "export RAY_USAGE_STATS_ENABLED=0",
        "export CREWAI_DISABLE_TELEMETRY=true",
        "export GOOSE_TELEMETRY_OFF=1",
        "export MLFLOW_DISABLE_TELEMETRY=true",
    ):
        assert wanted in out.splitlines()
    exports = [line.split("=")[0] for line in out.splitlines() if line.startswith("export ")]
    assert len(exports) == len(set(exports)), "one export per variable"
    # Claude Code was seen, so its DISABLE_TELEMETRY=1 wins; the others' `true` is a comment.
    assert "export DISABLE_TELEMETRY=1" in out.splitlines()
    assert "# note: DISABLE_TELEMETRY is 1 for claude-code but true for" in out


def test_optout_json_and_without_a_query_log(tmp_path: Path, data_dir: Path) -> None:
    advice = json.loads(run("optout", "--json", f"--data-dir={data_dir}"))
    assert advice["seen"] == [
        {"tool": "claude-code", "queries": 4, "last": advice["seen"][0]["last"]}
    ]
    first = advice["tools"][0]
    assert first["tool"] == "claude-code" and first["queries"] == 4
    assert {"env": "DISABLE_TELEMETRY", "value": "1", "alternative": False} in first["optout"]
    assert advice["log_problem"] is None
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run("optout", "vllm", f"--data-dir={empty}")
    assert out.startswith("# no query log at ")
    assert "export VLLM_NO_USAGE_STATS=1" in out.splitlines()


def test_an_unknown_tool_names_the_known_ones(data_dir: Path) -> None:
    out = run("optout", "nosuch", f"--data-dir={data_dir}", code=2)
    assert "no tool named 'nosuch'" in out and "claude-code" in out


def test_check_shows_the_optout_of_the_tool_behind_a_blocked_name(data_dir: Path) -> None:
    out = run("check", "o1158394.ingest.us.sentry.io", f"--data-dir={data_dir}", code=1)
    assert "o1158394.ingest.us.sentry.io: blocked" in out
    assert "turn it off at the source (claude-code, seen 4 times in the query log):" in out
    assert "    export DISABLE_ERROR_REPORTING=1" in out.splitlines()
    shared = run("check", "us.i.posthog.com", f"--data-dir={data_dir}", code=1)
    for tool in ("aider", "goose", "kilo-code", "mem0"):
        assert f"turn it off at the source ({tool}):" in shared
    verdict = json.loads(
        run("check", "statsig.anthropic.com", "--json", f"--data-dir={data_dir}", code=1)
    )
    assert verdict["entry"]["tools"] == ["claude-code"]
    assert [o["tool"] for o in verdict["optout"]] == ["claude-code"]
    assert "export DISABLE_TELEMETRY=1" in verdict["optout"][0]["shell"]
    plain = run("check", "example.com", f"--data-dir={data_dir}")
    assert "turn it off" not in plain


def test_shell_lines_quote_what_a_shell_would_read() -> None:
    assert OptOut("A_B", "1").shell_line() == "export A_B=1"
    assert OptOut("A", "x y;rm").shell_line() == "export A='x y;rm'"
    assert OptOut(setting="in-app toggle").shell_line() == "# in-app toggle"


def test_every_shipped_optout_variable_is_exported_once() -> None:
    from aidns.resolver.procinfo.optout import ToolOptOut

    tools = [ToolOptOut(t.name, t.description, t.optout) for t in default_tools().tools if t.optout]
    lines = shell_script(tools)
    exported = [line.split("=")[0] for line in lines if line.startswith("export ")]
    assert len(exported) == len(set(exported))
    assert [c.split(" ")[0] for c in conflicts(tools)] == ["DISABLE_TELEMETRY"]


def test_lists_table_does_not_count_unverified_entries(data_dir: Path) -> None:
    out = run("lists", f"--data-dir={data_dir}")
    header = out.splitlines()[0].split()
    assert header[:5] == ["NAME", "ACTION", "ON", "ENTRIES", "EVIDENCED"]
    row = next(line.split() for line in out.splitlines() if line.startswith("lmstudio "))
    assert int(row[4]) == int(row[3]) - 1
    assert "unverified entries (no primary source; not counted as evidenced):" in out
    assert "lmstudio 1" in out and "jan 1" in out
    rows = {r["name"]: r for r in json.loads(run("lists", "--json", f"--data-dir={data_dir}"))}
    assert (rows["streamlit"]["evidenced"], rows["streamlit"]["unverified"]) == (2, 1)
