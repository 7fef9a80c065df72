"""Who asked: real programs resolve through aidns on 127.0.0.1:53 in a namespace of our own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import DNSMASQ, aidns_command
from .netns import in_netns, namespace, run_in

UPSTREAM_PORT = 5300


def aidns_json(*args: str) -> list[dict[str, object]]:
    out = subprocess.run(
        aidns_command(*args), capture_output=True, text=True, timeout=30, check=True
    ).stdout
    text = out.strip()
    if not text:
        return []
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def resolver_netns(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """aidns on 127.0.0.1:53 and dnsmasq as its upstream, both inside a fresh namespace."""
    if not os.path.exists(DNSMASQ):
        pytest.skip("dnsmasq is not installed (apt-get install dnsmasq-base)")
    with namespace("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n") as name:
        upstream = subprocess.Popen(
            in_netns(
                name,
                [
                    DNSMASQ,
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    f"--port={UPSTREAM_PORT}",
                    "--pid-file=",
                    "--user=root",
                    "--address=/up.test/127.0.0.1",
                    "--local=/test/",
                ],
            ),
            stderr=subprocess.DEVNULL,
        )
        data_dir = tmp_path / "data"
        (tmp_path / "config.yaml").write_text("")
        server = subprocess.Popen(
            in_netns(
                name,
                aidns_command(
                    "serve",
                    "--listen=127.0.0.1:53",
                    f"--upstream=127.0.0.1:{UPSTREAM_PORT}",
                    f"--data-dir={data_dir}",
                    f"--config={tmp_path / 'config.yaml'}",
                ),
            ),
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stderr is not None
            for line in server.stderr:
                if "listening on tcp" in line:
                    break
            else:
                pytest.fail("aidns did not start in the namespace")
            yield name, data_dir
        finally:
            for process in (server, upstream):
                process.terminate()
                process.wait(10)


def wait_for_rows(data_dir: Path, name: str, wanted: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    while True:
        rows = aidns_json("who", name, "--json", f"--data-dir={data_dir}")
        if len(rows) >= wanted or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def test_who_names_the_programs_that_asked(resolver_netns: tuple[str, Path]) -> None:
    name, data_dir = resolver_netns
    getent = run_in(name, ["getent", "ahosts", "via-getent.up.test"])
    assert "127.0.0.1" in getent.stdout, getent.stderr
    python = run_in(
        name, [sys.executable, "-c", "import socket; socket.getaddrinfo('via-python.up.test', 80)"]
    )
    assert python.returncode == 0, python.stderr
    if shutil.which("curl"):
        run_in(name, ["curl", "--silent", "--max-time", "3", "http://via-curl.up.test:9/"])
    blocked = run_in(name, ["getent", "ahosts", "telemetry.lmstudio.ai"])
    assert "0.0.0.0" in blocked.stdout

    expected = {"via-getent.up.test": "getent", "via-python.up.test": "python"}
    if shutil.which("curl"):
        expected["via-curl.up.test"] = "curl"
    rows = wait_for_rows(data_dir, "up.test", len(expected))
    processes = {str(row["names"]): str(row["process"]) for row in rows}
    for queried, program in expected.items():
        assert processes.get(queried, "").startswith(program), (queried, rows)
    for row in rows:
        assert row["exe"] and row["pid"], row
    (lmstudio,) = wait_for_rows(data_dir, "telemetry.lmstudio.ai", 1)
    assert lmstudio["process"] == "getent" and lmstudio["verdicts"] == "blocked"

    logged = aidns_json("log", "--json", "--domain", "up.test", f"--data-dir={data_dir}")
    by_name = {str(row["name"]): row for row in logged}
    assert str(by_name["via-getent.up.test"]["process"]) == "getent"
    assert str(by_name["via-python.up.test"]["exe"]).startswith(
        str(Path(sys.executable).resolve().parent)
    )
