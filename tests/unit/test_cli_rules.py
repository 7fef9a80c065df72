from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from aidns.cli.main import app
from aidns.cli.rules import describe_tcp, describe_upstream

runner = CliRunner()


def run(data_dir: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, [*args, f"--data-dir={data_dir}"])
    assert result.exit_code == code, result.output
    return result.output


def test_block_allow_unblock_and_rules(tmp_path: Path) -> None:
    assert "would add: block stats.vllm.ai" in run(tmp_path, "block", "stats.vllm.ai", "--dry-run")
    assert not (tmp_path / "rules.yaml").exists()
    run(tmp_path, "block", "Stats.VLLM.ai.", "--note", "usage stats")
    run(tmp_path, "allow", "ok.example", "--exact")
    rules = json.loads(run(tmp_path, "rules", "--json"))
    assert [(r["name"], r["kind"], r["scope"], r["note"]) for r in rules] == [
        ("stats.vllm.ai", "block", "everyone", "usage stats"),
        ("=ok.example", "allow", "everyone", ""),
    ]
    assert "removed: block stats.vllm.ai" in run(tmp_path, "unblock", "stats.vllm.ai")
    assert "you have no block rule for nothing.example" in run(
        tmp_path, "unblock", "nothing.example"
    )


def test_unblock_names_the_list_that_still_blocks(tmp_path: Path) -> None:
    out = run(tmp_path, "unblock", "telemetry.lmstudio.ai")
    assert "still blocked by the list 'lmstudio'" in out and "aidns lists disable lmstudio" in out


def test_surgical_without_evidence_makes_no_rule(tmp_path: Path) -> None:
    out = run(tmp_path, "block", "sentry.io", "--surgical")
    assert "nothing under sentry.io has been looked up yet" in out
    assert not (tmp_path / "rules.yaml").exists()
    out = run(tmp_path, "block", "sentry.io", "--surgical", "--process", "ollama")
    assert "added: block sentry.io and every name below it, for ollama" in out


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    assert "'bad..name' is not a domain name" in run(tmp_path, "block", "bad..name", code=2)
    assert "DURATION: 'soon' is not a time" in run(tmp_path, "pause", "soon", code=2)
    (tmp_path / "rules.yaml").write_text("rules: [\n")
    assert "rules.yaml:2: not valid YAML" in run(tmp_path, "rules", code=2)


def test_pause_resume_and_status_without_a_server(tmp_path: Path) -> None:
    assert "blocking paused until" in run(tmp_path, "pause", "10m")
    status = run(tmp_path, "status", code=1)
    assert "aidns is not running" in status and "blocking is PAUSED" in status
    run(tmp_path, "resume")
    assert "PAUSED" not in run(tmp_path, "status", code=1)
    assert "until `aidns resume`" in run(tmp_path, "pause", "forever")
    assert "until resumed" in run(tmp_path, "status", code=1)


def test_upstream_health_in_words() -> None:
    assert describe_upstream({"upstream": "9.9.9.9", "rtt_ms": 12.5, "failures_in_a_row": 0}) == (
        "9.9.9.9 12.5 ms"
    )
    assert describe_upstream({"upstream": "9.9.9.9", "rtt_ms": 12.5, "failures_in_a_row": 3}) == (
        "9.9.9.9 failing (3 in a row)"
    )
    assert describe_upstream({"upstream": "1.1.1.1", "rtt_ms": None, "failures_in_a_row": 0}) == (
        "1.1.1.1 not asked yet"
    )


def test_tcp_limits_in_words_only_once_they_acted() -> None:
    quiet = {"clients": 3, "limit": 100, "closed_idle_for_new": 0, "accept_errors": {}}
    assert describe_tcp(quiet) is None
    acted = {**quiet, "closed_idle_for_new": 7, "closed_stalled": 1, "accept_errors": {"EMFILE": 2}}
    assert describe_tcp(acted) == (
        "TCP clients: 3 open, at most 100; closed 7 idle to make room, closed 1 that did not "
        "read their answers, failed to accept (EMFILE 2)"
    )
