"""Rules and lists change under a running server: block, allow, pause take effect in a second."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from .conftest import Aidns, Dnsmasq, aidns_command, answer, start_aidns, start_dnsmasq

EFFECT_S = 1.0


def cli(server: Aidns, *args: str) -> str:
    result = subprocess.run(
        aidns_command(*args, f"--data-dir={server.data_dir}"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def takes_effect(server: Aidns, name: str, expected: str, action: Callable[[], object]) -> float:
    action()
    started = time.monotonic()
    while True:
        got = answer(server, name)
        elapsed = time.monotonic() - started
        if got == expected:
            return elapsed
        assert elapsed < EFFECT_S, f"{name}: still {got}, wanted {expected} after {elapsed:.2f} s"
        time.sleep(0.02)


@pytest.fixture
def server(tmp_path: Path, dnsmasq: Dnsmasq) -> Aidns:
    running = start_aidns(tmp_path, f"--upstream=127.0.0.1:{dnsmasq.port}")
    yield running  # type: ignore[misc]
    running.stop()


def test_block_allow_unblock_pause_resume(server: Aidns) -> None:
    assert answer(server, "x.up.test") == "192.0.2.10"
    takes_effect(server, "x.up.test", "0.0.0.0", lambda: cli(server, "block", "up.test"))
    takes_effect(server, "x.up.test", "192.0.2.10", lambda: cli(server, "allow", "x.up.test"))
    assert answer(server, "y.up.test") == "0.0.0.0"
    takes_effect(server, "y.up.test", "192.0.2.10", lambda: cli(server, "unblock", "up.test"))
    takes_effect(server, "telemetry.lmstudio.ai", "NXDOMAIN", lambda: cli(server, "pause", "10m"))
    assert "PAUSED" in cli(server, "status")
    takes_effect(server, "telemetry.lmstudio.ai", "0.0.0.0", lambda: cli(server, "resume"))


def test_timed_pause_ends_by_itself(server: Aidns) -> None:
    takes_effect(server, "telemetry.lmstudio.ai", "NXDOMAIN", lambda: cli(server, "pause", "1s"))
    time.sleep(1.2)
    assert answer(server, "telemetry.lmstudio.ai") == "0.0.0.0"


def test_a_broken_rules_file_keeps_the_old_rules_and_shows_in_status(server: Aidns) -> None:
    takes_effect(server, "z.up.test", "0.0.0.0", lambda: cli(server, "block", "z.up.test"))
    rules = server.data_dir / "rules.yaml"
    rules.write_text("rules:\n  - name: [unclosed\n")
    time.sleep(0.6)
    assert answer(server, "z.up.test") == "0.0.0.0"
    status = subprocess.run(
        aidns_command("status", f"--data-dir={server.data_dir}"),
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert f"error: {rules}:3: not valid YAML" in status


@pytest.mark.parametrize("style", ["rename", "delete-then-create", "many-small-writes"])
def test_editor_save_styles_give_one_reload(server: Aidns, style: str) -> None:
    lists = server.data_dir / "lists"
    target = lists / "mine.txt"
    before = sum("reloaded:" in line for line in server_log(server))
    content = "".join(f"n{i}.edit.test\n" for i in range(200)) + "up.test\n"
    if style == "rename":
        temporary = lists / ".mine.txt.swp"
        temporary.write_text(content)
        os.replace(temporary, target)
    elif style == "delete-then-create":
        takes_effect(server, "old.test", "0.0.0.0", lambda: target.write_text("old.test\n"))
        time.sleep(0.5)
        before = sum("reloaded:" in line for line in server_log(server))
        target.unlink()
        target.write_text(content)
    else:
        with target.open("w") as out:
            for line in content.splitlines(keepends=True):
                out.write(line)
                out.flush()
                time.sleep(0.001)
    takes_effect(server, "deep.up.test", "0.0.0.0", lambda: None)
    time.sleep(0.5)
    assert sum("reloaded:" in line for line in server_log(server)) - before == 1


def server_log(server: Aidns) -> list[str]:
    """Lines the server has written so far, without stopping it."""
    assert server.process.stderr is not None
    os.set_blocking(server.process.stderr.fileno(), False)
    try:
        while line := server.process.stderr.readline():
            server.log.append(line.rstrip("\n"))
    finally:
        os.set_blocking(server.process.stderr.fileno(), True)
    return server.log


def test_reload_under_load_loses_no_query(server: Aidns) -> None:
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def client() -> None:
        nonlocal answered
        names = ["telemetry.lmstudio.ai", "a.up.test", "b.up.test", "analytics.jan.ai"]
        while not stop.is_set():
            for name in names:
                try:
                    answer(server, name)
                    answered += 1
                except dns.exception.Timeout:
                    failures.append(name)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for i in range(6):
            cli(server, "block" if i % 2 == 0 else "unblock", "up.test")
            time.sleep(0.4)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == [] and answered > 100


def test_an_upstream_changed_in_the_config_is_used_without_a_restart(tmp_path: Path) -> None:
    first = start_dnsmasq(tmp_path, "--address=/up.test/192.0.2.1")
    second = start_dnsmasq(tmp_path, "--address=/up.test/192.0.2.2")
    config = tmp_path / "config.yaml"
    config.write_text(f"upstream: 127.0.0.1:{first.port}\n")
    server = start_aidns(tmp_path)
    try:
        assert answer(server, "one.up.test") == "192.0.2.1"
        config.write_text(f"upstream: 127.0.0.1:{second.port}\nupstream_timeout: 1\n")
        deadline = time.monotonic() + 5
        while (got := answer(server, f"n{time.monotonic_ns()}.up.test")) != "192.0.2.2":
            assert time.monotonic() < deadline, got
            time.sleep(0.1)
        assert "PAUSED" not in cli(server, "status")
        assert f"upstreams: 127.0.0.1:{second.port}" in cli(server, "status")
    finally:
        server.stop()
        first.stop()
        second.stop()
    assert not any("take effect when aidns restarts" in line for line in server.log)


def test_shipped_lists_that_vanish_while_serving_leave_the_rules_in_effect(
    tmp_path: Path, dnsmasq: Dnsmasq
) -> None:
    """What a reinstall of aidns under a running server looks like: its own copy of the
    package (on PYTHONPATH, so the compiler child uses it too) loses its lists."""
    import aidns.resolver

    package = tmp_path / "site" / "aidns"
    shutil.copytree(Path(aidns.resolver.__file__).parents[1], package)
    server = start_aidns(
        tmp_path,
        f"--upstream=127.0.0.1:{dnsmasq.port}",
        env={"PYTHONPATH": str(tmp_path / "site")},
    )
    try:
        assert answer(server, "telemetry.lmstudio.ai") == "0.0.0.0"
        for shipped in (package / "blocklists").glob("*.yaml"):
            if shipped.name != "tools.yaml":
                shipped.unlink()
        (server.data_dir / "lists" / "mine.txt").write_text("mine.example\n")  # a reload
        deadline = time.monotonic() + 15
        while not (errors := status_errors(server)):
            assert time.monotonic() < deadline, "the reload did not say anything"
            time.sleep(0.2)
        assert "the lists aidns ships are gone" in errors[0] and "lmstudio" in errors[0]
        assert answer(server, "telemetry.lmstudio.ai") == "0.0.0.0"
        doctor = subprocess.run(
            aidns_command("doctor", f"--data-dir={server.data_dir}", "--config=/dev/null"),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        ).stdout
        assert "the running aidns says: the lists aidns ships are gone" in doctor
    finally:
        server.stop()
    said = [line for line in server.log if "the lists aidns ships are gone" in line]
    assert said and "ERROR" in said[0]


def status_errors(server: Aidns) -> list[str]:
    try:
        return list(json.loads((server.data_dir / "status.json").read_text())["errors"])
    except (OSError, ValueError, KeyError):
        return []
