from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aidns.cli.main import app
from tests.conftest import OffLoopbackTraffic

runner = CliRunner()


def test_check_prints_settings_from_env_without_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("upstream: ['tls://127.0.0.1:8853#dns.test']\nblock: [stats.vllm.ai]\n")
    monkeypatch.setenv("AIDNS_CONFIG", str(config))
    monkeypatch.setenv("AIDNS_DATA_DIR", str(tmp_path / "data"))
    result = runner.invoke(app, ["serve", "--check", "--listen", "127.0.0.1:5399"])
    assert result.exit_code == 0, result.output
    assert f"config: {config}" in result.output
    assert f"data dir: {tmp_path / 'data'}" in result.output
    assert "listen: 127.0.0.1:5399" in result.output
    assert "forwarding: tls://127.0.0.1:8853#dns.test (from " in result.output
    assert "config:block (1)" in result.output
    assert not (tmp_path / "data").exists()  # --check changes nothing


def test_bad_flag_value_is_one_clear_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "serve",
            "--check",
            f"--data-dir={tmp_path}",
            "--listen",
            "localhost:53",
            "--upstream",
            "127.0.0.1",
        ],
    )
    assert result.exit_code == 2
    assert result.output.startswith("aidns: --listen: 'localhost' does not appear to be an IPv4")
    assert "Traceback" not in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("aidns ")


@pytest.mark.parametrize("target", [("192.0.2.1", 53), ("2001:db8::1", 53), ("example.com", 80)])
def test_the_loopback_guard_stops_traffic_before_it_leaves(target: tuple[str, int]) -> None:
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock, pytest.raises(OffLoopbackTraffic):
        sock.sendto(b"x", target)
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(OffLoopbackTraffic):
        sock.connect(target)
