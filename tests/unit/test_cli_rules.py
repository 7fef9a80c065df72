from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
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
    assert "no AI tool has looked up anything under sentry.io yet" in out
    assert not (tmp_path / "rules.yaml").exists()
    out = run(tmp_path, "block", "sentry.io", "--surgical", "--process", "ollama")
    assert "added: block sentry.io and every name below it, for ollama" in out


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    assert "'bad..name' is not a domain name" in run(tmp_path, "block", "bad..name", code=2)
    assert "DURATION: 'soon' is not a duration or an end time" in run(
        tmp_path, "pause", "soon", code=2
    )
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


def test_every_line_of_rules_says_the_command_that_undoes_it_and_that_command_works(
    tmp_path: Path,
) -> None:
    run(tmp_path, "block", "stats.example.org")
    run(tmp_path, "block", "=stats.example.org")
    run(tmp_path, "block", "*.ads.example.net")
    run(tmp_path, "allow", "ok.example.org")
    run(tmp_path, "allow", "=exact.example.org")
    run(tmp_path, "block", "ingest.sentry.io", "--surgical", "--process", "ollama")
    rules = json.loads(run(tmp_path, "rules", "--json"))
    assert len(rules) == 6
    assert "aidns unblock =stats.example.org" in run(tmp_path, "rules")
    while rules:
        first = rules[0]
        command = first["undo"].split()
        assert command[0] == "aidns"
        assert "removed:" in run(tmp_path, *command[1:])
        left = json.loads(run(tmp_path, "rules", "--json"))
        assert left == rules[1:], f"{first['undo']} removed more or less than its line"
        rules = left


def test_allow_has_an_undo_and_a_block_under_an_allow_says_the_allow_wins(tmp_path: Path) -> None:
    run(tmp_path, "allow", "example.org")
    out = run(tmp_path, "block", "x.example.org")
    assert "added: block x.example.org" in out
    assert "your allow rule for example.org wins over any block" in out
    assert "aidns unallow *.example.org" in out
    assert "removed: allow example.org" in run(tmp_path, "unallow", "example.org")
    assert "wins" not in run(tmp_path, "block", "y.example.org")
    assert "you have no allow rule for example.org" in run(tmp_path, "unallow", "example.org")


def test_unblock_takes_the_same_syntax_as_rules_shows(tmp_path: Path) -> None:
    run(tmp_path, "block", "=stats.example.org")
    run(tmp_path, "block", "stats.example.org")
    out = run(tmp_path, "unblock", "=stats.example.org")
    assert "removed: block exactly stats.example.org" in out and "every name below" not in out
    assert json.loads(run(tmp_path, "rules", "--json"))[0]["name"] == "stats.example.org"
    run(tmp_path, "block", "=stats.example.org")
    out = run(tmp_path, "unblock", "stats.example.org")  # a bare name: every rule for it
    assert out.count("removed:") == 2


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("com", "com is a top-level domain"),
        ("CO.UK.", "co.uk is a public suffix"),
        ("github.io", "github.io is a public suffix"),
        ("=ai", "ai is a top-level domain"),
        ("1.2.3.4", "1.2.3.4 is an IP address"),
    ],
)
def test_names_that_reach_everything_are_refused_unless_forced(
    tmp_path: Path, name: str, why: str
) -> None:
    for command in ("block", "allow"):
        out = run(tmp_path, command, name, code=2)
        assert why in out and "--force" in out
        assert not (tmp_path / "rules.yaml").exists()
    assert "added: block" in run(tmp_path, "block", name, "--force")
    assert "added: block" in run(tmp_path, "block", "user.github.io")  # under a suffix is fine


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("a" * 64 + ".com", "has 64 characters, and a label has at most 63"),
        (("abcdefgh." * 29) + "com", "characters long, and a name has at most 253"),
        ("a..b", "an empty label"),
        ("a-.com", "starts or ends with a hyphen"),
        ("a b.com", "holds ' '"),
    ],
)
def test_a_name_that_is_not_one_says_which_rule_it_breaks(
    tmp_path: Path, name: str, said: str
) -> None:
    assert said in run(tmp_path, "block", name, code=2)


def test_lists_enable_takes_several_names_and_changes_none_when_one_is_wrong(
    tmp_path: Path,
) -> None:
    out = run(tmp_path, "lists", "disable", "sentry", "nosuch", "other", code=2)
    assert "no list named 'nosuch' or 'other', so nothing changed" in out
    assert not (tmp_path / "lists.state.yaml").exists()
    out = run(tmp_path, "lists", "disable", "sentry", "ollama")
    assert "sentry: off" in out and "ollama: off" in out
    assert "sentry: on" in run(tmp_path, "lists", "enable", "sentry", "ollama")


def test_pause_takes_durations_end_times_and_forever_and_says_the_date_when_not_today(
    tmp_path: Path,
) -> None:
    assert "DURATION: '0' is no time at all; `forever`" in run(tmp_path, "pause", "0", code=2)
    assert "is in the past" in run(tmp_path, "pause", "2020-01-01", code=2)
    assert not (tmp_path / "pause").exists()
    in_two_days = time.localtime(time.time() + 2 * 86400)
    out = run(tmp_path, "pause", "2d")
    assert time.strftime("%Y-%m-%d", in_two_days) in out
    end = time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() + 3 * 86400))
    out = run(tmp_path, "pause", end)
    assert f"until {time.strftime('%a', time.localtime(time.time() + 3 * 86400))} " in out
    assert end.replace("T", " ") in out
    assert "until `aidns resume`" in run(tmp_path, "pause", "forever")
    assert "blocking resumed" in run(tmp_path, "resume")
    assert "blocking was not paused; nothing changed" in run(tmp_path, "resume")


def test_status_text_shows_the_unexpected_errors_that_json_shows(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "started": time.time(),
                "updated": time.time(),
                "listen": ["udp 127.0.0.1:53"],
                "faults": {"reading a packet": 3, "telling QueryRecorder of a query": 1},
            }
        )
    )
    out = run(tmp_path, "status")
    assert (
        "unexpected errors: 4 (reading a packet 3, telling QueryRecorder of a query 1); "
        "see aidns's log" in out
    )
