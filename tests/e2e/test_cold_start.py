"""A restarted server maps the last rule snapshot when its files are unchanged, else compiles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import Dnsmasq, answer, start_aidns


def serve_once(tmp_path: Path, dnsmasq: Dnsmasq, *names: str) -> tuple[list[str], list[str]]:
    server = start_aidns(tmp_path, f"--upstream=127.0.0.1:{dnsmasq.port}")
    try:
        answers = [answer(server, name) for name in names]
    finally:
        server.stop()
    return answers, server.log


def test_a_restart_maps_the_last_snapshot_unless_a_file_changed(
    tmp_path: Path, dnsmasq: Dnsmasq
) -> None:
    lists = tmp_path / "data" / "lists"
    lists.mkdir(parents=True)
    (lists / "mine.txt").write_text("first.test\n")
    answers, log = serve_once(tmp_path, dnsmasq, "first.test")
    assert answers == ["0.0.0.0"]
    assert not any("from the last snapshot" in line for line in log)
    seed = (tmp_path / "data" / "hashseed").read_text()

    answers, log = serve_once(tmp_path, dnsmasq, "first.test")
    assert answers == ["0.0.0.0"]
    assert any("rules from the last snapshot" in line for line in log), log
    assert (tmp_path / "data" / "hashseed").read_text() == seed

    (lists / "mine.txt").write_text("first.test\nsecond.test\n")  # while aidns is stopped
    answers, log = serve_once(tmp_path, dnsmasq, "second.test", "first.test")
    assert answers == ["0.0.0.0", "0.0.0.0"]
    assert not any("from the last snapshot" in line for line in log)


def test_the_console_script_serves_the_snapshot_under_the_kept_seed(
    tmp_path: Path, dnsmasq: Dnsmasq
) -> None:
    script = Path(sys.executable).with_name("aidns")
    lists = tmp_path / "data" / "lists"
    lists.mkdir(parents=True)
    (lists / "mine.txt").write_text("first.test\n")
    serve_once(tmp_path, dnsmasq, "first.test")  # makes the seed and the snapshot
    command = [str(script), "serve", "--listen=127.0.0.1:0", f"--data-dir={tmp_path / 'data'}"]
    command += [f"--config={tmp_path / 'config.yaml'}", f"--upstream=127.0.0.1:{dnsmasq.port}"]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONHASHSEED"}
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stderr is not None
        log = []
        for line in server.stderr:
            log.append(line)
            if "listening on tcp" in line:
                break
        environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
    finally:
        server.terminate()
        server.wait(10)
    assert any("rules from the last snapshot" in line for line in log), log
    seed = (tmp_path / "data" / "hashseed").read_text().strip()
    assert f"PYTHONHASHSEED={seed}".encode() in environ
