"""The CLI as a person at a terminal meets it: completion, rich tables, download progress. Each
runs the real `aidns` in a child process, under a pseudo-terminal where a terminal matters."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

from ..listserver import serve_lists

AIDNS = [sys.executable, "-c", "from aidns.cli.main import app; app()"]
ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def completions(tmp_path: Path, *words: str) -> list[str]:
    environment = {
        **os.environ,
        "_AIDNS_COMPLETE": "complete_bash",
        "COMP_WORDS": " ".join(["aidns", *words]),
        "COMP_CWORD": str(len(words)),
        "AIDNS_DATA_DIR": str(tmp_path),
        "AIDNS_CONFIG": "/dev/null",
    }
    script = [sys.executable, "-c", "from aidns.cli.main import app; app(prog_name='aidns')"]
    done = subprocess.run(script, env=environment, capture_output=True, text=True, timeout=60)
    return done.stdout.split()


def on_a_terminal(tmp_path: Path, *args: str, columns: int = 120) -> tuple[str, str]:
    """(stdout, stderr) of `aidns ARGS` with both on pseudo-terminals."""
    out_main, out_side = pty.openpty()
    err_main, err_side = pty.openpty()
    environment = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color"}
    child = subprocess.Popen(
        [*AIDNS, *args, f"--data-dir={tmp_path}", "--config=/dev/null"],
        stdout=out_side,
        stderr=err_side,
        env=environment,
    )
    os.close(out_side)
    os.close(err_side)
    read = {out_main: b"", err_main: b""}
    while read:
        ready, _, _ = select.select(list(read), [], [], 60)
        assert ready, "no output for 60 s"
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other side closed
                chunk = b""
            if chunk:
                read[fd] += chunk
            else:
                output = read.pop(fd)
                if fd == out_main:
                    stdout = output
                else:
                    stderr = output
    assert child.wait(60) == 0, stderr
    return stdout.decode(), stderr.decode()


def run(tmp_path: Path, *args: str) -> str:
    done = subprocess.run(
        [*AIDNS, *args, f"--data-dir={tmp_path}", "--config=/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_completion_offers_lists_tools_and_your_rules(tmp_path: Path) -> None:
    assert completions(tmp_path, "lists", "enable", "sen") == ["sentry", "sentry-all"]
    assert "ollama" in completions(tmp_path, "log", "--tool", "oll")
    run(tmp_path, "block", "=stats.example.org")
    run(tmp_path, "allow", "ok.example.org")
    assert completions(tmp_path, "unblock", "") == ["=stats.example.org"]
    assert completions(tmp_path, "unallow", "o") == ["ok.example.org"]


def test_tables_are_rich_on_a_terminal_and_plain_when_piped(tmp_path: Path) -> None:
    run(tmp_path, "block", "=stats.example.org", "--note", "a note long enough to wrap " * 3)
    piped = run(tmp_path, "rules")
    assert piped.splitlines()[0].split() == ["name", "kind", "scope", "note", "added", "undo"]
    assert "\x1b[" not in piped
    shown, _ = on_a_terminal(tmp_path, "rules", columns=100)
    assert "\x1b[1m" in shown  # the header in bold
    lines = ESCAPES.sub(b"", shown.encode()).decode().splitlines()
    assert all(len(line.rstrip()) <= 100 for line in lines)
    words = ESCAPES.sub(b"", shown.encode()).decode().split()
    assert "=stats.example.org" in words and "unblock" in words  # wrapped, never cut


def test_a_download_shows_progress_on_a_terminal_and_nothing_when_piped(tmp_path: Path) -> None:
    body = "".join(f"0.0.0.0 n{index}.example\n" for index in range(200_000)).encode()
    with serve_lists() as site:
        url = site.put("/big.txt", body.decode())
        _, progress = on_a_terminal(tmp_path, "lists", "add", url, "--name=big")
        assert "big.txt" in progress and "MB" in progress
        quiet = subprocess.run(
            [*AIDNS, "lists", "update", "big", f"--data-dir={tmp_path}", "--config=/dev/null"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert quiet.returncode == 0 and quiet.stderr == ""
