"""What the CLI says about bad flags and arguments: the flag or file to blame, and why."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aidns.cli.main import app

runner = CliRunner()


def said(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def serve_check(tmp_path: Path, *args: str) -> list[str]:
    return ["serve", "--check", "--upstream=127.0.0.1:5300", f"--data-dir={tmp_path}", *args]


@pytest.mark.parametrize(
    ("flag", "blamed"),
    [
        ("--cache-size=-1", "--cache-size: expected a number of entries of at least 0, got -1"),
        ("--upstream-timeout=0", "--upstream-timeout: expected a number of seconds of at least"),
    ],
)
def test_a_bad_flag_value_blames_the_flag_not_the_config_file(
    tmp_path: Path, flag: str, blamed: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("log_level: info\n")
    out = said(*serve_check(tmp_path, flag, f"--config={config}"))
    assert blamed in out and str(config) not in out
    config.write_text("cache_size: -3\n")
    assert f"{config}:1: cache_size:" in said(*serve_check(tmp_path, f"--config={config}"))


@pytest.mark.parametrize("option", ["--listen", "--upstream"])
def test_an_unbracketed_ipv6_address_with_a_port_is_refused_as_ambiguous(
    tmp_path: Path, option: str
) -> None:
    out = said(*serve_check(tmp_path, f"{option}=::1:5420", "--config=/dev/null"))
    assert "write [::1]:5420 for the port, or [::1:5420] for the address" in out
    checked = runner.invoke(
        app, serve_check(tmp_path, "--listen=[::1]:5420", "--listen=2001:db8::8888")
    )
    assert "listen: [::1]:5420, [2001:db8::8888]:53" in checked.output


def test_an_argument_that_is_not_utf8_is_said_as_bytes(tmp_path: Path) -> None:
    undecodable = b"\xff\xfe.com".decode("utf-8", "surrogateescape")  # as Python gets it
    out = said("block", undecodable, f"--data-dir={tmp_path}")
    assert "b'\\xff\\xfe.com' is not a domain name: it holds bytes that are not UTF-8" in out


@pytest.mark.parametrize("command", [["serve"], ["block"], ["log"], ["lists", "enable"]])
def test_help_shows_no_type_on_flags(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "<bool>" not in result.output and "--help" in result.output
