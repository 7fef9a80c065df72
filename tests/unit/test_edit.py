"""The rules wing's API for the CLI and the HTTP API: results as data, nothing printed."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from aidns.resolver.errors import ConfigError
from aidns.resolver.rules.edit import (
    allow_name,
    block_name,
    pause_blocking,
    resume_blocking,
    server_status,
    unblock_name,
    user_rules,
)


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_block_allow_and_unblock_return_what_changed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = block_name(data, "Stats.Example.ORG.", note="usage stats").added
    assert [(r.name, r.kind, r.note) for r in added] == [
        ("stats.example.org", "block", "usage stats")
    ]
    assert [r.name for r in allow_name(data, "ok.example", exact=True).added] == ["ok.example"]
    assert [r.as_json()["name"] for r in user_rules(data)] == ["stats.example.org", "=ok.example"]
    done = unblock_name(data, "stats.example.org", config_path=config(tmp_path, ""))
    assert [r.name for r in done.change.removed] == ["stats.example.org"]
    assert (done.blocked_by_list, done.check_error) == (None, None)
    assert [r.name for r in user_rules(data)] == ["ok.example"]


def test_unblock_names_the_list_that_still_blocks(tmp_path: Path) -> None:
    done = unblock_name(
        tmp_path / "data", "x.mine.example", config_path=config(tmp_path, "block: [mine.example]\n")
    )
    assert done.change.removed == []
    assert done.blocked_by_list is not None
    assert (done.blocked_by_list.list_name, done.blocked_by_list.rule) == (
        "config:block",
        "mine.example",
    )


def test_unblock_removes_the_rule_even_when_the_lists_cannot_be_checked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    block_name(data, "z.example")
    done = unblock_name(data, "z.example", config_path=config(tmp_path, "listen: [unclosed\n"))
    assert [r.name for r in done.change.removed] == ["z.example"]
    assert isinstance(done.check_error, ConfigError)
    assert user_rules(data) == []


def test_pause_returns_when_it_ends_and_resume_ends_it(tmp_path: Path) -> None:
    assert pause_blocking(tmp_path, "forever") == math.inf
    assert server_status(tmp_path).paused_until == math.inf
    until = pause_blocking(tmp_path, "10m")
    assert until == pytest.approx(time.time() + 600, abs=5)
    assert server_status(tmp_path).paused_until == pytest.approx(until, abs=0.001)
    resume_blocking(tmp_path)
    status = server_status(tmp_path)
    assert status.as_json() == {"running": False, "paused_until": None, "status": None}
