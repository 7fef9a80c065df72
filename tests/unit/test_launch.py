"""`aidns serve`'s quick option reader takes what typer's serve takes, and leaves it the rest."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from aidns.cli import launch
from aidns.cli.entry import _option
from aidns.cli.serve import serve


def test_the_quick_reader_knows_every_option_of_the_serve_command() -> None:
    options = launch.serve_options([])
    assert options is not None
    assert set(options) == set(inspect.signature(serve).parameters) - {"check"}


def test_options_are_read_as_typer_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIDNS_CONFIG", raising=False)
    monkeypatch.setenv("AIDNS_DATA_DIR", "/from/env")
    options = launch.serve_options(
        [
            "--listen=127.0.0.1:5353",
            "--listen",
            "[::1]:5353",
            "--upstream",
            "127.0.0.1:53",
            "--cache-size=0",
            "--upstream-timeout",
            "1.5",
            "--no-query-log",
            "--config=/c.yaml",
        ]
    )
    assert options is not None
    assert options["listen"] == ["127.0.0.1:5353", "[::1]:5353"]
    assert options["upstream"] == ["127.0.0.1:53"]
    assert (options["cache_size"], options["upstream_timeout"]) == (0, 1.5)
    assert options["query_log"] is False
    assert (options["config"], options["data_dir"]) == (Path("/c.yaml"), Path("/from/env"))
    assert options["bootstrap"] is None and options["block_response"] is None


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--check"], ["--cache-size=many"], ["--listen"], ["--nonsense"], ["extra"]],
)
def test_anything_else_is_left_to_typer(args: list[str]) -> None:
    assert launch.serve_options(args) is None


def test_the_data_dir_is_found_before_parsing() -> None:
    assert _option(["--listen=x", "--data-dir", "/a", "--data-dir=/b"], "--data-dir") == "/b"
    assert _option(["--data-dir"], "--data-dir") is None
